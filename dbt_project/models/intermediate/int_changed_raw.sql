{{ config(materialized='table', engine='MergeTree()', order_by='(pass, kind, session_account, signature)') }}
-- depends_on: {{ ref('int_changed_groups') }}
-- depends_on: {{ ref('int_changed_walks') }}
-- The deduplicated raw rows (FINAL) that int_uploads' incremental build reads, for the refresh
-- groups it recomputes only, read from iq.raw_instructions once per build. int_uploads reads its
-- chunks, finalizes, creations, code-ins, indexes and failed pieces from here: each of those was a
-- FINAL read over the whole raw table, and a ClickHouse CTE is re-run at every use, so the
-- incremental int_uploads merged the raw table ~30 times (9.6 M rows read on 0.3 M raw rows).
-- Candidate rows (a superset; int_uploads applies the exact group rules):
--   session account, G3 code-in on_chain_path or inline signature in the changed groups;
--   index rows naming a changed list's tail (tail_tx / on_chain_path);
--   pieces a changed walk stops at or names as its tail (int_uploads checks whether they failed).
-- pass: the int_uploads pass that reads the row (macro raw_pass; the table is sorted on it).
-- A full refresh fills it with every raw row int_uploads reads (below): its full build then reads
-- this table ~35 times (its CTEs re-run) instead of merging the raw table with FINAL each time,
-- which set the 3M-row full build's peak RSS (docs/transform-scale.md).
{%- set incremental = incremental_build() %}
{% if incremental %}
with
groups as (
    select refresh_group from {{ ref('int_changed_groups') }}
),

tails as (
    select upload_key as tail from {{ ref('int_changed_walks') }}
    union distinct
    select {{ linked_group_tail('refresh_group') }} from groups
    where {{ linked_group_tail('refresh_group') }} != ''
),

walk_links as (
    select before_tx as signature from {{ ref('int_changed_walks') }}
    union distinct
    select tail from tails
)

select *, {{ raw_pass() }} as pass
from {{ source('iq', 'raw_instructions') }} final
prewhere session_account in (select refresh_group from groups)
      or on_chain_path in (select refresh_group from groups)
      or signature in (select refresh_group from groups)
      or tail_tx in (select tail from tails)
      or on_chain_path in (select tail from tails)
      or (kind = 'linked_piece' and signature in (select signature from walk_links))
{% else %}
-- Full refresh: every row int_uploads' full build reads (FINAL applied once here), without the
-- columns it never reads (payload, data, accounts, tx_error: kept as empty values, same columns).
-- Successful linked pieces are left out: int_uploads only asks which pieces failed (it reads
-- walks from int_linked_walks). A WHERE, not a PREWHERE: tx_status is decided after FINAL.
select * replace ('' as payload, '' as data, CAST([] AS Array(String)) as accounts, '' as tx_error),
       {{ raw_pass() }} as pass
from {{ source('iq', 'raw_instructions') }} final
where kind != 'linked_piece' or tx_status = 'failed'
{% endif %}
