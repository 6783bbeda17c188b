-- Builds that started and never finished (issue 27): a whole build now records `state = 'started'`
-- before dbt runs and `state = 'finished'` (with its tables) when every model succeeded. A model
-- built in passes (int_uploads, session_completeness, upload_payloads) that stops between two
-- passes leaves groups half rebuilt whose newest rows already moved the model's watermark, so the
-- next incremental build would not see them again: a build after a 'started' row with no
-- 'finished' one is a full refresh (transform/build_state.py). Rows from before this column are
-- finished builds (the only rows 011 recorded). finished_at is when the row was written.
ALTER TABLE iq.dbt_builds {on_cluster} ADD COLUMN IF NOT EXISTS state LowCardinality(String) DEFAULT 'finished'
