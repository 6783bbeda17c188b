{{ config(materialized='table', order_by='upload_key') }}
-- Per upload, which chunk indexes are present and which are not, as compact ranges ('0-5,7'),
-- plus the indexes that need a second look: duplicated (same bytes sent twice), conflicting
-- (different bytes), and seen only in failed transactions (a common cause of a gap).
with chunk_indexes as (
    select
        upload_key,
        arraySort(groupArrayIf(chunk_index, copies_seen > 0)) as present_indexes,
        arraySort(groupArrayIf(chunk_index, copies_seen > 1 and distinct_payloads = 1)) as duplicated_indexes,
        arraySort(groupArrayIf(chunk_index, distinct_payloads > 1)) as conflicting_indexes,
        arraySort(groupArrayIf(chunk_index, copies_seen = 0 and failed_copies > 0)) as failed_only_indexes,
        toUInt32(sum(copies_seen)) as successful_copy_count,
        toUInt32(sum(failed_copies)) as failed_copy_count
    from {{ ref('int_session_chunks') }}
    where upload_key in (select upload_key from {{ ref('session_completeness') }})
    group by upload_key
)

select
    c.upload_key as upload_key,
    c.upload_shape as upload_shape,
    c.generation as generation,
    c.status as status,
    c.chunks_expected as chunks_expected,
    c.chunks_present as chunks_present,
    c.chunks_missing as chunks_missing,
    c.coverage_ratio as coverage_ratio,
    {{ compact_ranges(runs_of('i.present_indexes')) }} as present_ranges,
    c.missing_ranges_text as missing_ranges,
    {{ compact_ranges(runs_of('i.duplicated_indexes')) }} as duplicated_indexes,
    {{ compact_ranges(runs_of('i.conflicting_indexes')) }} as conflicting_indexes,
    {{ compact_ranges(runs_of('i.failed_only_indexes')) }} as failed_only_indexes,
    i.successful_copy_count as successful_copies,
    i.failed_copy_count as failed_copies,
    c.missing_piece_signature as missing_piece_signature,
    c.missing_window_first_slot as missing_window_first_slot,
    c.missing_window_last_slot as missing_window_last_slot
from {{ ref('session_completeness') }} as c
left join chunk_indexes as i on i.upload_key = c.upload_key
