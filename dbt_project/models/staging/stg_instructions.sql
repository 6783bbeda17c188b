-- Every decoded IQ instruction, deduplicated (FINAL on the ReplacingMergeTree key
-- (slot, signature, ix_index, inner_index): re-ingesting a range changes nothing) and typed.
-- Failed transactions stay here, flagged by tx_failed, so later models can exclude them and still
-- count them. tx_status 'unknown' (blocks with empty metadata, early epochs only) is treated as
-- NOT failed: the chain kept the instruction and nothing says it failed.
select
    slot,
    block_time,
    signature,
    tx_index,
    ix_index,
    inner_index,
    program_id,
    generation,
    kind,
    instruction,
    session_account,
    session_id,
    chunk_index,
    total_chunks,
    seq,
    method,
    decode_break,
    merkle_root,
    payload,
    on_chain_path,
    metadata,
    before_tx,
    handle,
    tail_tx,
    type_field,
    offset,
    accounts,
    tx_status,
    tx_error,
    -- Bool, not the LowCardinality(UInt8) a comparison of a LowCardinality column gives: dbt unit
    -- tests cast fixtures to the column type, and ClickHouse refuses to create LowCardinality(UInt8)
    CAST(tx_status = 'failed' AS Bool) as tx_failed,
    source,
    run_id,
    ingested_at
from {{ source('iq', 'raw_instructions') }} final
