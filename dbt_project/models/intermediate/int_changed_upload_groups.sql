{{ config(materialized='table', engine='MergeTree()', order_by='(pass, upload_group)') }}
-- depends_on: {{ ref('int_session_chunks') }}
-- The upload groups upload_payloads recomputes this build, and the pass that builds each one.
-- Incremental: the groups of session_completeness rows newer than upload_payloads' watermark (its
-- newest source row, less the look-back); a full refresh: every group. Listed once, before the
-- passes: upload_payloads' own watermark moves with its first pass, so a later pass must not
-- recompute its changed set.
-- pass: upload_payloads joins and concatenates every chunk of a pass's complete uploads in one
-- INSERT; at 10M raw rows one INSERT stopped at the 4G cap (docs/transform-scale.md). The groups
-- are split into `passes` of about iq_payload_bytes_per_pass chunk bytes (pass = cityHash64 %
-- passes), so a pass's memory is bounded by that, not by the warehouse.
{%- set incremental = incremental_build() %}
{#- read without ref(): upload_payloads is built after this model (a ref would be a cycle) -#}
{%- set payloads = adapter.get_relation(database=none, schema=this.schema, identifier='upload_payloads') %}
with
groups as (
    select distinct upload_group
    from {{ ref('session_completeness') }}
    {% if incremental %}
    where source_ingested_at > (
        select max(source_ingested_at) - toIntervalSecond({{ var('iq_lookback_seconds') }}) from {{ payloads }})
    {% endif %}
),

chunk_bytes as (
    -- the bytes upload_payloads joins for these groups (the chosen copies of present chunks)
    select sum(length(payload)) as bytes
    from {{ ref('int_session_chunks') }}
    where copies_seen > 0
    {% if incremental %}and upload_group in (select upload_group from groups){% endif %}
),

build as (
    select toUInt32(greatest(1, intDiv(bytes + {{ payload_bytes_per_pass() }} - 1, {{ payload_bytes_per_pass() }}))) as passes
    from chunk_bytes
)

select
    g.upload_group as upload_group,
    toUInt32(cityHash64(g.upload_group) % b.passes) as pass,
    b.passes as passes
from groups as g
cross join build as b
