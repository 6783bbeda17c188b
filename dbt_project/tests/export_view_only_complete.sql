-- sessions_ready_to_export must offer complete uploads only (every row), sending the bytes its
-- sha256 names. An incremental build checks the uploads it recomputed (macros/changed_scope.sql),
-- a full refresh or `--full-tests` all of them.
select e.upload_key, 'not complete' as problem
from {{ ref('sessions_ready_to_export') }} as e
left join {{ ref('session_completeness') }} as c on c.upload_key = e.upload_key
where c.status != 'complete'{{ and_changed_upload('e.upload_key') }}

union all

select upload_key, 'payload_base64 does not match sha256 / payload_length' as problem
from (
    select upload_key, sha256, payload_length, base64Decode(payload_base64) as sent
    from {{ ref('sessions_ready_to_export') }}
    where true{{ and_changed_upload('upload_key') }}
)
where lower(hex(SHA256(sent))) != sha256 or length(sent) != payload_length
