{#- Incremental builds: the watermark an incremental model compares new rows with, and the
    refresh groups it recomputes (delete+insert) when any of their rows is (re-)ingested.
    Kept together because the groups derived from raw rows here must agree with the groups the
    models assign (int_uploads.refresh_group); dbt_project/README.md, "Incremental builds". -#}

{#- Incremental watermark: newest source row the previous build of this model saw, minus
    `iq_lookback_seconds` (see dbt_project.yml). Models store it per row as source_ingested_at. -#}
{% macro previous_watermark() -%}
(select max(source_ingested_at) - toIntervalSecond({{ var('iq_lookback_seconds') }}) from {{ this }})
{%- endmacro %}

{#- The refresh group of a raw instruction: the unit int_uploads and session_completeness
    recompute when any of its rows is (re-)ingested. Session uploads: the session account (all of
    a G2 account's uploads together, since a finalize_bundle may move between them); inline: the
    code-in's signature; every linked list: one group, LINKED_LISTS_GROUP, since a new piece can
    turn one list's tail into another's middle. Must agree with the groups int_uploads assigns. -#}
{% macro linked_lists_group() -%}'linked-lists'{%- endmacro %}
{% macro refresh_group_of_raw() -%}
multiIf(
    kind in ('linked_piece', 'linked_index')
        or (generation = 'g3' and instruction in {{ g3_code_in_instructions() }} and length(on_chain_path) >= {{ linked_tail_min_length() }}),
        {{ linked_lists_group() }},
    generation = 'g3' and instruction in {{ g3_code_in_instructions() }} and on_chain_path = '', signature,
    generation = 'g3' and instruction in {{ g3_code_in_instructions() }}, if(session_account != '', session_account, on_chain_path),
    session_account)
{%- endmacro %}
