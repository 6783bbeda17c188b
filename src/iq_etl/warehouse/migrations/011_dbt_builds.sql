-- Finished dbt builds (issue 27): one row per whole `dbt build`/`run` whose models all succeeded,
-- naming the incremental model tables it left (name=uuid, sorted). An incremental build is trusted
-- only on the tables a finished build left: dbt-clickhouse creates a new incremental table empty and
-- then fills it, so a build killed on its first run (or a full refresh killed between two table swaps)
-- leaves tables an incremental build would take as complete. transform/build_state.py reads this.
CREATE TABLE IF NOT EXISTS iq.dbt_builds {on_cluster}
(
    invocation_id  String,
    finished_at    DateTime64(3, 'UTC') DEFAULT now64(3),
    full_refresh   UInt8,
    tables         String
)
ENGINE = {merge_tree}
ORDER BY finished_at
