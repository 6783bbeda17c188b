{{ config(
    materialized='incremental',
    incremental_strategy='delete+insert',
    on_schema_change='fail',
    unique_key='upload_group',
    engine='MergeTree()',
    order_by='(upload_group, upload_key)'
) }}
-- The reconstructed bytes of every complete upload, one row per upload of any status (payload
-- columns empty unless complete) so that source_ingested_at is a watermark over everything seen.
-- joined bytes: the chosen chunks' payloads concatenated in index order (groupArray + arraySort);
-- for a linked list the index is the walk order from "Genesis".
-- file bytes: the joined text after the IQ gateway's rule (docs/protocol.md §5): decode_rule says
-- which of data_url / base64 / text applied.
-- verification / verification_reason: copied from session_completeness (the G1 Merkle check).
-- Incremental: whole upload groups whose completeness row changed since the previous build are
-- recomputed and replaced (delete+insert on upload_group).
with
{% if incremental_build() %}
changed_groups as (
    select distinct upload_group
    from {{ ref('session_completeness') }}
    where source_ingested_at > {{ previous_watermark() }}
),
{% endif %}

uploads as (
    select upload_key, upload_group, status, verification, verification_reason, chunks_expected, source_ingested_at
    from {{ ref('session_completeness') }}
    {% if incremental_build() %}where upload_group in (select upload_group from changed_groups){% endif %}
),

chunks_of_complete_uploads as (
    select upload_key, chunk_index, payload
    from {{ ref('int_session_chunks') }}
    where upload_group in (select upload_group from uploads where status = 'complete')
      and upload_key in (select upload_key from uploads where status = 'complete')
      and copies_seen > 0
),

joined as (
    select
        upload_key,
        arrayStringConcat(arrayMap(c -> c.2, arraySort(c -> c.1, groupArray((chunk_index, payload))))) as joined_payload,
        toUInt32(count()) as chunk_count
    from chunks_of_complete_uploads
    group by upload_key
),

reconstructed as (
    select
        u.upload_key as upload_key,
        u.upload_group as upload_group,
        u.status as status,
        u.verification as verification,
        u.verification_reason as verification_reason,
        u.source_ingested_at as source_ingested_at,
        if(u.status = 'complete', j.joined_payload, '') as payload,
        if(u.status = 'complete', j.chunk_count, 0) as chunk_count
    -- the payloads on the left, the uploads (no bytes) as the hash table: a join builds its right side
    -- in memory, and the bytes are the big side (every complete upload's on a full build)
    from joined as j
    right join uploads as u on j.upload_key = u.upload_key
),

decoded as (
    select
        *,
        if(status = 'complete', {{ gateway_decode_rule('payload') }}, '') as decode_rule
    from reconstructed
)

select
    upload_key,
    upload_group,
    status,
    verification,
    verification_reason,
    chunk_count,
    payload,
    toUInt64(length(payload)) as payload_length,
    if(status = 'complete', lower(hex(SHA256(payload))), '') as sha256,
    decode_rule,
    if(status = 'complete', {{ gateway_file_bytes('payload', 'decode_rule') }}, '') as file_bytes,
    toUInt64(length(file_bytes)) as file_length,
    if(status = 'complete', lower(hex(SHA256(file_bytes))), '') as file_sha256,
    source_ingested_at,
    -- when this row was computed: the payload tests re-verify the rows of the latest build only
    now64(3) as built_at,
    -- the dbt invocation that wrote the row (tests of an incremental build check this build's rows)
    '{{ invocation_id }}' as build_id
from decoded
