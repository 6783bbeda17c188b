-- Cursors for live tails: the newest signature already discovered per (source, address), so a
-- scheduled run asks getSignaturesForAddress only for what is new (`until`).
CREATE TABLE IF NOT EXISTS iq.cursors {on_cluster}
(
    name            String,           -- e.g. 'rpc-signatures:<program id>'
    last_signature  String,
    last_slot       UInt64,
    updated_at      DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = {replacing}(updated_at)
ORDER BY name
