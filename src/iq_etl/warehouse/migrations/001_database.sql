-- The iq database and the migrations ledger itself is created by the runner; this file creates
-- the database for clusters (ON CLUSTER) and is a no-op elsewhere.
CREATE DATABASE IF NOT EXISTS iq {on_cluster}
