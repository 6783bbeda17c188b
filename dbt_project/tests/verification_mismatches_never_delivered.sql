{{ config(severity='warn') }}
-- A verification mismatch (bytes the chain does not commit to: docs/protocol.md §9) is never
-- exported: export refuses it before any send. A 'delivered' row for its content means a delivery
-- slipped past the runner (or happened before the warehouse was upgraded to verification): a
-- warning, so that a build says which uploads to chase at the backend, without blocking the build.
select c.upload_key as upload_key, e.target as target, c.verification_reason as verification_reason
from {{ ref('session_completeness') }} as c
inner join {{ ref('upload_payloads') }} as p on p.upload_key = c.upload_key
inner join {{ ref('stg_exports') }} as e on e.session_key = c.upload_key and e.sha256 = p.sha256
where c.verification = 'mismatch' and e.status = 'delivered'{{ and_changed_upload('c.upload_key') }}
