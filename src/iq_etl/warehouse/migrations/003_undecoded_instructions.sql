-- Instructions of IQ programs that no decoder accepted, kept with the reason: nothing is dropped.
CREATE TABLE IF NOT EXISTS iq.undecoded_instructions {on_cluster}
(
    slot             UInt64,
    block_time       Nullable(Int64),
    signature        String,
    tx_index         Int32,
    ix_index         UInt16,
    inner_index      Int16,
    program_id       LowCardinality(String),
    accounts         Array(String),
    data             String,
    reason           String,
    tx_status        LowCardinality(String),
    tx_error         String,
    source           LowCardinality(String),
    run_id           String,
    ingested_at      DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = {replacing}(ingested_at)
ORDER BY (slot, signature, ix_index, inner_index)
SETTINGS non_replicated_deduplication_window = 1000
