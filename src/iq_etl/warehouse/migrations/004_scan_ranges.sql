-- The coverage ledger: one row per sub-range a run scanned. A sub-range is only marked 'done'
-- after all its rows were written; resume skips 'done' sub-ranges of the same source.
CREATE TABLE IF NOT EXISTS iq.scan_ranges {on_cluster}
(
    source             LowCardinality(String),
    first_slot         UInt64,
    last_slot          UInt64,
    run_id             String,
    status             LowCardinality(String),  -- done | partial | failed
    transactions_seen  UInt64,
    iq_matches         UInt64,
    undecoded          UInt64,
    skipped_slots      Array(UInt64),
    last_slot_seen     Nullable(UInt64),
    error              String,
    started_at         DateTime64(3, 'UTC'),
    finished_at        DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = {replacing}(finished_at)
ORDER BY (source, first_slot, last_slot, run_id)
SETTINGS non_replicated_deduplication_window = 1000
