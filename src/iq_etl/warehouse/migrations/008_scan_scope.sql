-- What each scan looked for (issue 21): the program set and the account (session PDA) filter of
-- the run that recorded the sub-range. A sub-range counts as covered for a request only when a
-- scan of the same source whose scope is a superset covered it (iq_etl.warehouse.scan_ledger).
-- Rows recorded before this migration have an empty program set: their scope is unknown, so they
-- cover nothing and the next ingest rescans those slots (rows replace themselves, never doubled).
ALTER TABLE iq.scan_ranges {on_cluster} ADD COLUMN IF NOT EXISTS program_ids Array(String) DEFAULT [];
ALTER TABLE iq.scan_ranges {on_cluster} ADD COLUMN IF NOT EXISTS session_pdas Array(String) DEFAULT []
