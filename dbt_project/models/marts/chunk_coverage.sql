{{ config(materialized='view') }}
-- Per upload, which chunk indexes are present and which are not, as compact ranges ('0-5,7'),
-- plus the indexes that need a second look: duplicated (same bytes sent twice), conflicting
-- (different bytes), and seen only in failed transactions (a common cause of a gap).
-- A view over session_completeness, which keeps these per upload incrementally.
select
    upload_key,
    upload_shape,
    generation,
    status,
    chunks_expected,
    chunks_present,
    chunks_missing,
    coverage_ratio,
    present_ranges_text as present_ranges,
    missing_ranges_text as missing_ranges,
    {{ compact_ranges(runs_of('duplicated_indexes')) }} as duplicated_indexes,
    {{ compact_ranges(runs_of('conflicting_indexes')) }} as conflicting_indexes,
    {{ compact_ranges(runs_of('failed_only_indexes')) }} as failed_only_indexes,
    successful_chunk_copies as successful_copies,
    failed_chunk_copies as failed_copies,
    missing_piece_signature,
    missing_window_first_slot,
    missing_window_last_slot
from {{ ref('session_completeness') }}
