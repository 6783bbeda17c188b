{{ config(materialized='table', engine='MergeTree()', order_by='refresh_group') }}
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
-- A full refresh rebuilds every model whole; this table is then empty and the tests check all.
{%- set incremental = incremental_build() %}
{#- read without ref(): these models are built after this one (a ref would be a cycle) -#}
{%- set uploads = adapter.get_relation(database=none, schema=this.schema, identifier='int_uploads') -%}
{%- set completeness = adapter.get_relation(database=none, schema=this.schema, identifier='session_completeness') %}
{% if incremental %}
with
watermark as (
    select least(
        (select max(source_ingested_at) from {{ uploads }}),
        (select max(source_ingested_at) from {{ completeness }})) - toIntervalSecond({{ var('iq_lookback_seconds') }}) as since
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

select refresh_group from groups
{% else %}
select '' as refresh_group where false
{% endif %}
