-- A complete upload must not have two successful copies of one index with different bytes.
-- (An incremental build checks the uploads it recomputed: macros/changed_scope.sql.)
select c.upload_key, c.chunk_index, c.distinct_payloads
from {{ ref('int_session_chunks') }} as c
where c.distinct_payloads > 1
  and c.upload_key in (select upload_key from {{ ref('session_completeness') }} where status = 'complete'{{ and_changed_upload('upload_key') }})
