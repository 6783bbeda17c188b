{{ config(materialized='table', engine='MergeTree()', order_by='(pass, refresh_group)') }}
-- depends_on: {{ ref('int_linked_walks') }}
-- depends_on: {{ source('iq', 'raw_instructions') }}
-- The refresh groups this build recomputes: what int_uploads and session_completeness delete and
-- insert, and what the data tests of an incremental build check (macros/changed_scope.sql).
-- Built first, every run, from the raw rows ingested since the older of the two models'
-- watermarks (so a build that failed half way recomputes what it left behind):
--   sessions and inline uploads: the group of each new raw row (refresh_group_of_raw);
--   linked lists: the root (deepest piece, int_linked_walks.root_signature) of every walk through a
--     new piece or from a new index tail, plus the old group of each list the new rows touch (a
--     list whose missing piece arrived gets a deeper root: its old group must go).
-- A full refresh lists every group there is, exactly (a list's root; a named tail with no walk
-- is its own group): int_uploads recomputes "the changed groups" in both cases, one SQL.
-- pass: int_uploads builds the groups in `passes` inserts of about iq_rows_per_pass raw rows each
-- (pass = cityHash64(refresh_group) % passes), so its memory is bounded by a pass, not the warehouse
-- (10M raw rows, one INSERT: stopped at the 4G cap; docs/transform-scale.md).
{%- set incremental = incremental_build() %}
{#- read without ref(): these models are built after this one (a ref would be a cycle) -#}
{%- set uploads = adapter.get_relation(database=none, schema=this.schema, identifier='int_uploads') -%}
{%- set completeness = adapter.get_relation(database=none, schema=this.schema, identifier='session_completeness') %}
{%- set passes = build_passes(incremental, uploads, completeness) %}
{% if incremental %}
with
watermark as (
    select {{ changed_since(uploads, completeness) }} as since
),

new_rows as (
    select kind, generation, instruction, on_chain_path, signature, session_account, tail_tx
    from {{ source('iq', 'raw_instructions') }}
    where ingested_at > (select since from watermark)
),

new_list_keys as (
    -- signatures a new row names as a piece or a tail
    select signature as key from new_rows where kind = 'linked_piece'
    union distinct
    select tail_tx from new_rows where kind = 'linked_index' and generation = 'g1' and tail_tx != ''
    union distinct
    select on_chain_path from new_rows
    where generation = 'g3' and instruction in {{ g3_code_in_instructions() }}
      and length(on_chain_path) >= {{ linked_tail_min_length() }}
),

groups as (
    select {{ refresh_group_of_raw() }} as refresh_group
    from new_rows
    where not {{ is_linked_raw() }}

    union distinct

    select {{ linked_group('root_signature') }}
    from {{ ref('int_linked_walks') }}
    where piece_signature in (select key from new_list_keys)
       or upload_key in (select key from new_list_keys)

    union distinct

    -- a named tail without any piece yet is its own root
    select {{ linked_group('key') }} from new_list_keys

    union distinct

    select refresh_group
    from {{ uploads }}
    where upload_shape = 'linked_list'
      and (missing_piece_signature in (select key from new_list_keys)
           or upload_key in (select key from new_list_keys))
)

select
    g.refresh_group as refresh_group,
    -- a `list:<tail>` group whose tail starts a walk goes in the pass of the walk's root group (its
    -- old group, listed to be deleted: built alone, the tail would look like a list with no piece)
    toUInt32(cityHash64(if(w.root_group != '', w.root_group, g.refresh_group)) % {{ passes }}) as pass,
    toUInt32({{ passes }}) as passes
from groups as g
left join (
    select {{ linked_group('upload_key') }} as tail_group, any({{ linked_group('root_signature') }}) as root_group
    from {{ ref('int_linked_walks') }}
    where {{ linked_group('upload_key') }} in (select refresh_group from groups)
    group by upload_key
) as w on w.tail_group = g.refresh_group
{% else %}
with
new_list_keys as (
    -- every signature a row names as a piece or a tail
    select signature as key from {{ source('iq', 'raw_instructions') }} where kind = 'linked_piece'
    union distinct
    select tail_tx from {{ source('iq', 'raw_instructions') }}
    where kind = 'linked_index' and generation = 'g1' and tail_tx != ''
    union distinct
    select on_chain_path from {{ source('iq', 'raw_instructions') }}
    where generation = 'g3' and instruction in {{ g3_code_in_instructions() }}
      and length(on_chain_path) >= {{ linked_tail_min_length() }}
),

groups as (
    select {{ refresh_group_of_raw() }} as refresh_group
    from {{ source('iq', 'raw_instructions') }}
    where not {{ is_linked_raw() }}

    union distinct

    select {{ linked_group('root_signature') }} from {{ ref('int_linked_walks') }}

    union distinct

    -- a named tail (or piece) that starts no walk is its own group; a key that starts a walk
    -- belongs to its root's group, listed above (listing it here too would build its list twice)
    select {{ linked_group('key') }} from new_list_keys
    where key not in (select upload_key from {{ ref('int_linked_walks') }})
)

select refresh_group, toUInt32(cityHash64(refresh_group) % {{ passes }}) as pass, toUInt32({{ passes }}) as passes
from groups
{% endif %}
