-- One row per IQ instruction (top-level or inner/CPI) that a decoder accepted. Facts, not opinions:
-- ordering, dedup and completeness are dbt models. Re-ingesting the same instruction replaces the
-- row (same ORDER BY key); read with FINAL or argMax.
CREATE TABLE IF NOT EXISTS iq.raw_instructions {on_cluster}
(
    slot             UInt64,
    block_time       Nullable(Int64),
    signature        String,
    tx_index         Int32,            -- index of the transaction in its block (-1 when unknown)
    ix_index         UInt16,           -- top-level instruction index
    inner_index      Int16,            -- position among the inner instructions of ix_index; -1 = top level
    stack_height     Nullable(UInt8),
    program_id       LowCardinality(String),
    generation       LowCardinality(String),   -- g1 | g2_pinocchio | g2_legacy | g3
    kind             LowCardinality(String),   -- chunk | finalize | create_session | linked_piece | linked_index
    instruction      LowCardinality(String),   -- IDL name, or chunk/finalize for Pinocchio
    session_account  String,           -- base58; '' when the instruction names no session
    session_id       String,           -- hex of 16 bytes for G2; '' otherwise
    chunk_index      Nullable(UInt32),
    total_chunks     Nullable(UInt32),
    seq              Nullable(UInt64),
    method           Nullable(UInt8),
    decode_break     Nullable(UInt8),
    merkle_root      String,           -- hex, '' when absent
    payload          String,           -- bytes this instruction contributes to the file
    on_chain_path    String,
    metadata         String,           -- metadata JSON text as sent on chain ('' when absent)
    before_tx        String,
    handle           String,
    tail_tx          String,
    type_field       String,
    offset           String,
    accounts         Array(String),    -- the instruction's account keys, base58, in order
    data             String,           -- raw instruction data
    tx_status        LowCardinality(String),   -- ok | failed | unknown (empty metadata)
    tx_error         String,
    source           LowCardinality(String),   -- car | rpc-blocks | rpc-signatures
    run_id           String,
    ingested_at      DateTime64(3, 'UTC') DEFAULT now64(3),
    INDEX idx_session session_account TYPE bloom_filter GRANULARITY 4
)
ENGINE = {replacing}(ingested_at)
ORDER BY (slot, signature, ix_index, inner_index)
SETTINGS non_replicated_deduplication_window = 1000
