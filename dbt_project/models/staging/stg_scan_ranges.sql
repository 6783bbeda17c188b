-- The coverage ledger iq.scan_ranges (written by `iq-etl ingest`): one row per scanned sub-range,
-- source and run. Read WITHOUT FINAL, as scan_coverage always read it: the table is a
-- ReplacingMergeTree(finished_at) on (source, first_slot, last_slot, run_id), so a sub-range
-- recorded twice may show twice here until a merge; consumers deduplicate on that key
-- (scan_coverage: argMax(status, finished_at), because its unit test replaces this view with a
-- subquery, which ClickHouse refuses to read with FINAL).
with source as (
    select * from {{ source('iq', 'scan_ranges') }}
),

renamed as (
    select
        source,
        first_slot,
        last_slot,
        run_id,
        status,
        transactions_seen,
        iq_matches,
        undecoded,
        skipped_slots,
        last_slot_seen,
        error,
        started_at,
        finished_at,
        -- what the scan looked for (empty program_ids: recorded before scopes were kept, unknown)
        program_ids,
        session_pdas
    from source
)

select * from renamed
