{{ config(severity='warn') }}
-- Not an error: uploads whose finalize has not been seen yet are normal while a client is still
-- sending (or when the finalize lies outside the scanned slots). Listed as a warning so a build
-- says how many there are.
select upload_key, generation, chunks_present, first_slot, last_slot
from {{ ref('session_completeness') }}
where status = 'awaiting_finalize'
