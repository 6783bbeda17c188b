-- Every decoded IQ instruction, deduplicated (FINAL on the ReplacingMergeTree key
-- (slot, signature, ix_index, inner_index): re-ingesting a range changes nothing) and typed.
-- Failed transactions stay here, flagged by tx_failed, so later models can exclude them and still
-- count them. tx_status 'unknown' (blocks with empty metadata, early epochs only) is treated as
-- NOT failed: the chain kept the instruction and nothing says it failed.
{{ raw_instructions_final() }}
