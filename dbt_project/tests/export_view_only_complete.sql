-- sessions_ready_to_export must offer complete uploads only (every row), sending the bytes its
-- sha256 names (decoding payload_base64 is expensive: checked for the uploads the latest build
-- computed, all of them after a full refresh).
select e.upload_key, 'not complete' as problem
from {{ ref('sessions_ready_to_export') }} as e
left join {{ ref('session_completeness') }} as c on c.upload_key = e.upload_key
where c.status != 'complete'

union all

select upload_key, 'payload_base64 does not match sha256 / payload_length' as problem
from (
    select upload_key, sha256, payload_length, base64Decode(payload_base64) as sent
    from {{ ref('sessions_ready_to_export') }}
    where upload_key in (
        select upload_key from {{ ref('upload_payloads') }}
        where built_at = (select max(built_at) from {{ ref('upload_payloads') }}))
)
where lower(hex(SHA256(sent))) != sha256 or length(sent) != payload_length
