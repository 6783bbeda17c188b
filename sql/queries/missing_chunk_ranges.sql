-- Every upload that is not complete, worst first: which chunk indexes are missing (compact
-- ranges like '3-7,12'), which were seen only in failed transactions, and why.
--   iq-etl sql --file sql/queries/missing_chunk_ranges.sql --format csv
SELECT
    c.upload_key AS upload_key,
    toString(c.generation) AS generation,
    c.status AS status,
    c.chunks_present AS present,
    c.chunks_expected AS expected,
    c.missing_ranges_text AS missing_ranges,
    v.failed_only_indexes AS failed_only,
    v.conflicting_indexes AS conflicting,
    c.missing_piece_signature AS missing_piece,
    c.status_reason AS reason
FROM iq.session_completeness AS c
LEFT JOIN iq.chunk_coverage AS v ON v.upload_key = c.upload_key
WHERE c.status != 'complete'
ORDER BY c.status = 'awaiting_finalize', c.chunks_missing DESC, c.upload_key
