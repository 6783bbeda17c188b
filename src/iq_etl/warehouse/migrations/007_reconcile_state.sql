-- Reconcile state, one row per upload that a reconcile run searched for (latest row wins; read
-- with FINAL). Each scheduled run widens an incomplete upload's search window (padding x growth, up
-- to a cap) instead of rescanning the same slots; `attempts` and `padding` carry that across runs.
CREATE TABLE IF NOT EXISTS iq.reconcile_state {on_cluster}
(
    upload_key     String,
    attempts       UInt32,                  -- reconcile runs that searched for this upload
    method         LowCardinality(String),  -- window (slot window re-ingested) | rpc (signatures of the session PDA)
    padding        UInt64,                  -- slots added on each side of the upload's own window, last attempt
    window_first   UInt64,
    window_last    UInt64,
    status_before  LowCardinality(String),  -- session_completeness.status when the attempt was planned
    run_id         String,
    updated_at     DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = {replacing}(updated_at)
ORDER BY upload_key
