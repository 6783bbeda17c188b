{{ config(materialized='table', order_by='(program_ids, session_pdas, first_slot)') }}
-- What has been scanned, per scan scope (the program set and session-PDA filter a scan looked
-- for): the 'done' sub-ranges of iq.scan_ranges (via stg_scan_ranges, any source) of one scope
-- merged into maximal runs of slots (kind = 'scanned'), and the holes between consecutive runs
-- (kind = 'gap'). Partial and failed sub-ranges do not count as scanned. A run narrowed to a few
-- session PDAs or fewer programs is its own scope: it never shows as coverage of a wider one
-- (`iq-etl status` and the report merge every scope that is a superset of the configured
-- programs, over every account).
with latest_ranges as (
    -- deduplicated with argMax on the table's key rather than FINAL: dbt unit tests replace
    -- stg_scan_ranges with a subquery, and ClickHouse refuses FINAL on a subquery
    select
        source, first_slot, last_slot, run_id,
        argMax(status, finished_at) as latest_status,
        argMax(program_ids, finished_at) as program_ids,
        argMax(session_pdas, finished_at) as session_pdas
    from {{ ref('stg_scan_ranges') }}
    group by source, first_slot, last_slot, run_id
),

done_ranges as (
    select first_slot, last_slot, source, program_ids, session_pdas
    from latest_ranges
    where latest_status = 'done'
),

ordered as (
    select
        first_slot,
        last_slot,
        source,
        program_ids,
        session_pdas,
        -- the furthest slot reached by any earlier range of the same scope (in first_slot order)
        max(last_slot) over (partition by program_ids, session_pdas order by first_slot, last_slot
                             rows between unbounded preceding and 1 preceding) as reach_before,
        row_number() over (partition by program_ids, session_pdas order by first_slot, last_slot) as position
    from done_ranges
),

runs as (
    select
        *,
        sum(if(position = 1 or first_slot > reach_before + 1, 1, 0)) over (
            partition by program_ids, session_pdas order by first_slot, last_slot
            rows between unbounded preceding and current row) as run_id
    from ordered
),

scanned as (
    select
        program_ids,
        session_pdas,
        run_id,
        min(first_slot) as run_first_slot,
        max(last_slot) as run_last_slot,
        arraySort(groupUniqArray(toString(source))) as sources,
        toUInt32(count()) as ranges_merged
    from runs
    group by program_ids, session_pdas, run_id
),

gaps as (
    select
        program_ids,
        session_pdas,
        run_id,
        lagInFrame(run_last_slot) over (partition by program_ids, session_pdas order by run_first_slot
                                        rows between unbounded preceding and unbounded following) as previous_run_last,
        run_first_slot as next_run_first
    from scanned
)

select
    'scanned' as kind,
    program_ids,
    session_pdas,
    toUInt64(run_first_slot) as first_slot,
    toUInt64(run_last_slot) as last_slot,
    toUInt64(run_last_slot - run_first_slot + 1) as slots,
    sources,
    ranges_merged
from scanned
union all
select
    'gap' as kind,
    program_ids,
    session_pdas,
    toUInt64(previous_run_last + 1) as first_slot,
    toUInt64(next_run_first - 1) as last_slot,
    toUInt64(next_run_first - previous_run_last - 1) as slots,
    CAST([] AS Array(String)) as sources,
    toUInt32(0) as ranges_merged
from gaps
where run_id > 1
