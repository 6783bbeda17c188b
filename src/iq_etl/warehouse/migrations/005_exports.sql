-- Every export attempt, append-only. An upload is delivered to a target when a row with
-- status = 'delivered' exists for (session_key, sha256, target).
CREATE TABLE IF NOT EXISTS iq.exports {on_cluster}
(
    session_key       String,          -- the upload's key (see dbt int_uploads.upload_key)
    sha256            String,          -- hex sha256 of the delivered payload
    target            String,          -- redacted target URL (no credentials)
    attempt           UInt32,
    status            LowCardinality(String),  -- delivered | failed | retrying | refused | dry_run
    http_status       Nullable(UInt16),
    response_excerpt  String,
    error             String,
    payload_bytes     UInt64,
    run_id            String,
    attempted_at      DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = {merge_tree}
ORDER BY (session_key, sha256, target, attempted_at)
SETTINGS non_replicated_deduplication_window = 1000
