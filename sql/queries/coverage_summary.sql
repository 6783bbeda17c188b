-- Uploads by status and generation: how many, how many chunks present and missing, and the share
-- complete. Needs the dbt models (`iq-etl transform`).
--   iq-etl sql --file sql/queries/coverage_summary.sql
SELECT
    toString(generation) AS generation,
    status,
    count() AS uploads,
    sum(chunks_present) AS chunks_present,
    sum(chunks_missing) AS chunks_missing,
    round(100 * count() / sum(count()) OVER (PARTITION BY generation), 1) AS pct_of_generation,
    min(first_slot) AS first_slot,
    max(last_slot) AS last_slot
FROM iq.session_completeness
GROUP BY generation, status
ORDER BY generation, status
