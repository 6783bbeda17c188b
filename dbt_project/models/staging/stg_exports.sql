-- Every export attempt, as iq.exports holds it (append-only MergeTree, written by `iq-etl export`):
-- one row per attempt, nothing merged or deduplicated. An upload is delivered to a target when a
-- row with status 'delivered' exists for (session_key, sha256, target). Columns keep the table's
-- names (session_key is the upload's upload_key; renaming it is a later, versioned change).
with source as (
    select * from {{ source('iq', 'exports') }}
),

renamed as (
    select
        session_key,
        sha256,
        target,
        attempt,
        status,
        http_status,
        response_excerpt,
        error,
        payload_bytes,
        run_id,
        attempted_at
    from source
)

select * from renamed
