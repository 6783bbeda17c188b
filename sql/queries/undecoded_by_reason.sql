-- Instructions of IQ programs that no decoder accepted, grouped by program and reason, with the
-- slot span and one example to look at (`iq-etl decode --program ... --data ...`).
--   iq-etl sql --file sql/queries/undecoded_by_reason.sql
SELECT
    toString(program_id) AS program_id,
    reason,
    count() AS instructions,
    countIf(tx_status = 'failed') AS in_failed_txs,
    min(slot) AS first_slot,
    max(slot) AS last_slot,
    any(signature) AS example_signature,
    hex(substring(any(data), 1, 16)) AS example_data_head
FROM iq.undecoded_instructions FINAL
GROUP BY program_id, reason
ORDER BY instructions DESC, program_id, reason
