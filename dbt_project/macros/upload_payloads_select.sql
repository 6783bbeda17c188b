{#- upload_payloads' SELECT for one pass of int_changed_upload_groups: the uploads of that pass's
    upload groups (every group on a full refresh, the changed ones on an incremental build). The
    model runs pass 0, its post-hook the others. The model's header (models/marts/upload_payloads.sql)
    says what it holds. -#}
{% macro upload_payloads_select(pass) -%}
with
changed_groups as (
    select upload_group from {{ ref('int_changed_upload_groups') }} where pass = {{ pass }}
),

uploads as (
    select upload_key, upload_group, status, verification, verification_reason, chunks_expected, source_ingested_at
    from {{ ref('session_completeness') }}
    where upload_group in (select upload_group from changed_groups)
),

chunks_of_complete_uploads as (
    select upload_key, chunk_index, payload
    from {{ ref('int_session_chunks') }}
    -- upload_group first: the table's sort key, so only those groups' granules are read
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
    -- in memory, and the bytes are the big side
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
{%- endmacro %}
