-- One row per run (issue 26): what each pipeline / follow / ingest / export run did and, for runs
-- that followed the chain, where the chain tip and the covered frontier stood. The report draws its
-- time axis (coverage growth, completions, deliveries, lag) from here; status shows the latest lag.
CREATE TABLE IF NOT EXISTS iq.runs {on_cluster}
(
    run_id             String,
    flow_run_id        String,
    command            LowCardinality(String),
    started_at         DateTime64(3, 'UTC'),
    finished_at        DateTime64(3, 'UTC') DEFAULT now64(3),
    status             LowCardinality(String),  -- ok | failed
    slots_covered      UInt64,                  -- slots scanned by this run (sub-ranges done)
    rows_written       UInt64,
    uploads_complete   UInt64,                  -- complete uploads in the warehouse after the run
    uploads_delivered  UInt64,                  -- uploads this run delivered
    errors             UInt32,
    message            String,
    tip_slot           Nullable(UInt64),        -- the chain tip the run saw (follow runs)
    tip_time           Nullable(DateTime('UTC')),
    frontier_slot      Nullable(UInt64),        -- the end of contiguous coverage from the start slot
    frontier_time      Nullable(DateTime('UTC')),
    warehouse          String
)
ENGINE = {merge_tree}
ORDER BY (started_at, run_id)
