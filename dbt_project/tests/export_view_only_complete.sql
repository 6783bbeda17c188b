-- sessions_ready_to_export must offer complete uploads only, sending the bytes its sha256 names.
-- Decoding every payload_base64 is expensive: this covers the uploads the latest build computed
-- (all of them after a full refresh); the status check covers every row.
select e.upload_key
from {{ ref('sessions_ready_to_export') }} as e
left join {{ ref('session_completeness') }} as c on c.upload_key = e.upload_key
where c.status != 'complete'
   or (e.upload_key in (
            select upload_key from {{ ref('upload_payloads') }}
            where built_at = (select max(built_at) from {{ ref('upload_payloads') }}))
       and (lower(hex(SHA256(base64Decode(e.payload_base64)))) != e.sha256
            or e.payload_length != length(base64Decode(e.payload_base64))))
