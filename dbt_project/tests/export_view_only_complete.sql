-- sessions_ready_to_export must offer complete uploads only, with the sha256 of the bytes it sends.
select e.upload_key
from {{ ref('sessions_ready_to_export') }} as e
left join {{ ref('session_completeness') }} as c on c.upload_key = e.upload_key
where c.status != 'complete'
   or lower(hex(SHA256(base64Decode(e.payload_base64)))) != e.sha256
   or e.payload_length != length(base64Decode(e.payload_base64))
