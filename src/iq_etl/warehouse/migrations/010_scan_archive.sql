-- Archive identity (issue 24): which archive a CAR scan read, per sub-range (`epoch=root=…;size=…;
-- etag=…;modified=…`, one entry per epoch the sub-range touches). When an epoch's archive is rebuilt
-- in place, its sub-ranges scanned from the old one are recorded `stale` by the next ingest (they
-- no longer count as covered: rescanned, rows replaced, never doubled). Empty: an RPC scan, or a
-- row from before this migration (taken as current).
ALTER TABLE iq.scan_ranges {on_cluster} ADD COLUMN IF NOT EXISTS archive String DEFAULT ''
