{#- Incremental builds: the watermark an incremental model compares new rows with, and the
    refresh groups it recomputes (delete+insert) when any of their rows is (re-)ingested.
    Kept together because the groups derived from raw rows here must agree with the groups the
    models assign (int_uploads.refresh_group); dbt_project/README.md, "Incremental builds". -#}

{#- The models a build updates in place (delete+insert on their refresh keys). -#}
{% macro incremental_models() -%}
{{ return(['int_linked_walks', 'int_session_chunks', 'int_uploads', 'session_completeness', 'upload_payloads']) }}
{%- endmacro %}

{#- THE rule for "this build is incremental", used by every model, hook and helper table (never
    dbt's is_incremental() alone): not a --full-refresh, and every model of incremental_models()
    exists. When any is missing, every model is recomputed whole (the incremental models by a
    delete+insert of every group), so no model reads a changed set another model did not build.
    The runner (src/iq_etl/transform/runner.py, build_state.py) adds what dbt cannot see: tables
    left half-filled by a first build that was killed (dbt-clickhouse creates a new incremental table
    empty, then inserts) count as missing until a whole build has finished (iq.dbt_builds). -#}
{% macro incremental_build() -%}
{%- if not execute or flags.FULL_REFRESH -%}{{ return(false) }}{%- endif -%}
{%- for name in incremental_models() -%}
    {%- if adapter.get_relation(database=none, schema=this.schema, identifier=name) is none -%}
        {{ return(false) }}
    {%- endif -%}
{%- endfor -%}
{{ return(true) }}
{%- endmacro %}

{#- The watermark int_changed_groups reads new raw rows from: the older of int_uploads' and
    session_completeness's newest source row, less the look-back. -#}
{% macro changed_since(uploads, completeness) -%}
least(
    (select max(source_ingested_at) from {{ uploads }}),
    (select max(source_ingested_at) from {{ completeness }})) - toIntervalSecond({{ var('iq_lookback_seconds') }})
{%- endmacro %}

{#- How many inserts int_uploads builds its groups in: one per ~iq_rows_per_pass raw rows to read
    (every raw row on a full refresh, the rows since the watermark on an incremental build). -#}
{% macro build_passes(incremental, uploads, completeness) -%}
{%- if not execute -%}{{ return(1) }}{%- endif -%}
{%- if incremental -%}
    {%- set rows = run_query("select count() from " ~ source('iq', 'raw_instructions') ~ " where ingested_at > " ~ changed_since(uploads, completeness)).columns[0].values()[0] -%}
{%- else -%}
    {%- set rows = run_query("select count() from " ~ source('iq', 'raw_instructions')).columns[0].values()[0] -%}
{%- endif -%}
{%- set per_pass = [var('iq_rows_per_pass') | int, 1] | max -%}
{{ return([1, ((rows | int) + per_pass - 1) // per_pass] | max) }}
{%- endmacro %}

{#- The int_uploads pass a raw row of int_changed_raw belongs to: its refresh group's pass
    (cityHash64 % passes, as int_changed_groups), or linked_rows_pass() for linked-list rows (index
    rows, failed pieces: their group is their walk's root, known only from int_linked_walks), which
    every pass reads. int_changed_raw is sorted on it, so a pass reads its own rows. -#}
{% macro raw_pass() -%}
toUInt32(if({{ is_linked_raw() }}, {{ linked_rows_pass() }}, cityHash64({{ refresh_group_of_raw() }}) % {{ changed_passes() }}))
{%- endmacro %}

{% macro linked_rows_pass() -%}4294967295{%- endmacro %}

{#- `a and b` for optional raw filters (none when both are none). -#}
{% macro and_filters(a, b) -%}
{%- if a and b -%}{{ return('(' ~ a ~ ') and (' ~ b ~ ')') }}{%- elif a -%}{{ return(a) }}{%- else -%}{{ return(b) }}{%- endif -%}
{%- endmacro %}

{#- Chunk bytes per upload_payloads pass (int_changed_upload_groups): the runner sets it from
    IQ_TRANSFORM_MAX_MEMORY. -#}
{% macro payload_bytes_per_pass() -%}
toUInt64({{ [var('iq_payload_bytes_per_pass') | int, 1] | max }})
{%- endmacro %}

{#- The number of passes int_changed_groups chose (1 when it is empty), as SQL. -#}
{% macro changed_passes() -%}
greatest(toUInt32(1), ifNull((select max(passes) from {{ ref('int_changed_groups') }}), toUInt32(1)))
{%- endmacro %}

{#- Incremental watermark: newest source row the previous build of this model saw, minus
    `iq_lookback_seconds` (see dbt_project.yml). Models store it per row as source_ingested_at. -#}
{% macro previous_watermark() -%}
(select max(source_ingested_at) - toIntervalSecond({{ var('iq_lookback_seconds') }}) from {{ this }})
{%- endmacro %}

{#- A raw instruction that belongs to a linked list (a piece, a G1 index, a G3 code-in naming a tail). -#}
{% macro is_linked_raw() -%}
(kind in ('linked_piece', 'linked_index')
 or (generation = 'g3' and instruction in {{ g3_code_in_instructions() }} and length(on_chain_path) >= {{ linked_tail_min_length() }}))
{%- endmacro %}

{#- The refresh group of a linked list: its root, the deepest piece its walk reached (lists sharing
    a piece share it); a list without any piece found is its own root (its tail). -#}
{% macro linked_group(root) -%}
concat('list:', {{ root }})
{%- endmacro %}

{#- The root signature a linked-list refresh group names ('' for any other group): linked_group reversed. -#}
{% macro linked_group_tail(group) -%}
if(startsWith({{ group }}, 'list:'), substring({{ group }}, 6), '')
{%- endmacro %}

{#- The refresh group of a raw instruction that is not part of a linked list (int_changed_groups
    places those by their walk's root): the session account for session uploads (all of a G2
    account's uploads together, since a finalize_bundle may move between them), the code-in's
    signature for an inline upload. Must agree with the groups int_uploads assigns. -#}
{% macro refresh_group_of_raw() -%}
multiIf(
    generation = 'g3' and instruction in {{ g3_code_in_instructions() }} and on_chain_path = '', signature,
    generation = 'g3' and instruction in {{ g3_code_in_instructions() }}, if(session_account != '', session_account, on_chain_path),
    session_account)
{%- endmacro %}

{#- After a delete+insert on refresh_group: rows of a changed group this build did not write (a
    group none of whose uploads exists any more, e.g. a list's old root once its missing piece
    arrived; the old rows of the groups of passes after the first, which the model's own
    delete+insert did not see). A post-hook of int_uploads and session_completeness (refresh_group,
    int_changed_groups) and upload_payloads (upload_group, int_changed_upload_groups). -#}
{% macro delete_unbuilt_changed_groups(key='refresh_group', changed='int_changed_groups') -%}
{%- if incremental_build() -%}
delete from {{ this }}
where {{ key }} in (select {{ key }} from {{ ref(changed) }})
  and build_id != '{{ invocation_id }}'
{%- endif -%}
{%- endmacro %}

{#- Post-hook of a model built in passes (int_uploads, session_completeness over int_changed_groups;
    upload_payloads over int_changed_upload_groups): passes 1 .. passes-1 of `changed`, each its own INSERT of `select(pass)` into the model's table (after the full
    refresh's swap, or the incremental delete+insert of pass 0). Rows of a changed group that this
    build did not write are deleted by the next hook (delete_unbuilt_changed_groups); a build stopped
    between passes is redone whole (transform/build_state.py) or, incremental, by the rerun's same
    changed groups. -#}
{% macro insert_remaining_passes(select, changed='int_changed_groups') -%}
{%- if execute -%}
    {%- set passes = run_query("select max(passes) from " ~ ref(changed)).columns[0].values()[0] | int -%}
    {%- for pass in range(1, passes) -%}
        {%- do run_query("insert into " ~ this ~ " " ~ select(pass)) -%}
    {%- endfor -%}
{%- endif -%}
{#- nothing left to send: dbt skips a hook that renders empty -#}
{%- endmacro %}
