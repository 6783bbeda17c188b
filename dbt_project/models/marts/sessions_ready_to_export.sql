{{ config(materialized='view') }}
-- The export contract (docs/DECISIONS.md, "Upload keys and the export contract"): complete
-- uploads with everything the reader backend's request body needs (docs/protocol.md §8), and
-- delivered_targets: the targets with a 'delivered' row in iq.exports (via stg_exports) for this
-- (upload_key, sha256), read at query time. Export sends rows where
-- NOT has(delivered_targets, {target:String}). filename/metadata are raw chain input (hostile).
-- verification: a 'mismatch' row stays here so that export can list it, and export refuses it
-- (never sends it; iq.exports records the refusal with verification_reason).
with delivered as (
    select session_key, sha256, groupUniqArray(target) as delivered_targets
    from {{ ref('stg_exports') }}
    where status = 'delivered'
    group by session_key, sha256
)

select
    c.upload_key as upload_key,
    toString(c.generation) as generation,
    toString(c.program_id) as program_id,
    c.session_account as session_account,
    c.session_id as session_id,
    toUInt32(assumeNotNull(c.chunks_expected)) as total_chunks,
    toUInt32(p.chunk_count) as chunk_count,
    c.merkle_root as merkle_root,
    CAST(c.method AS Nullable(UInt8)) as method,
    toUInt64(c.first_slot) as first_slot,
    toUInt64(c.last_slot) as last_slot,
    CAST(c.finalize_slot AS Nullable(UInt64)) as finalize_slot,
    c.finalize_signature as finalize_signature,
    base64Encode(p.payload) as payload_base64,
    p.sha256 as sha256,
    toUInt64(p.payload_length) as payload_length,
    base64Encode(p.file_bytes) as file_base64,
    p.file_sha256 as file_sha256,
    p.decode_rule as decode_rule,
    c.filename as filename,
    c.filetype as filetype,
    c.metadata as metadata,
    c.verification as verification,
    c.verification_reason as verification_reason,
    d.delivered_targets as delivered_targets
from {{ ref('session_payloads') }} as p
inner join {{ ref('session_completeness') }} as c on c.upload_key = p.upload_key
left join delivered as d on d.session_key = p.upload_key and d.sha256 = p.sha256
where c.status = 'complete'
