{{ config(materialized='view') }}
-- Complete uploads only: the reconstructed bytes (joined in index order), their sha256, and the
-- file bytes the IQ gateway would serve (decode_rule), from upload_payloads. The semi-join
-- on session_completeness keeps out a list tail that has since stopped being an upload.
select
    upload_key,
    upload_group,
    verification,
    verification_reason,
    chunk_count,
    payload,
    payload_length,
    sha256,
    decode_rule,
    file_bytes,
    file_length,
    file_sha256,
    built_at
from {{ ref('upload_payloads') }}
where status = 'complete'
  and upload_key in (select upload_key from {{ ref('session_completeness') }} where status = 'complete')
