{{ config(materialized='view') }}
-- Every finalize with its upload_key resolved. G2-legacy finalize_bundle carries no session id:
-- it is attached to the upload on the same account whose instructions precede it, i.e. the
-- session id of the latest G2 chunk/finalize on that account at or before the bundle's slot
-- (ASOF JOIN; within one slot the latest by transaction order). A bundle with nothing before it
-- gets the key `<account>:` (an upload with no chunks, reported as missing chunks).
-- (The query is the int_finalizes_select macro: int_uploads' incremental build narrows it to its
-- groups under FINAL.)
{{ int_finalizes_select() }}
