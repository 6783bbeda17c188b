-- Slot windows worth scanning again, merged, each ready as a slot spec for `iq-etl ingest S:E`:
--   missing chunks   the window between the present chunks around each gap, padded;
--   broken lists     the missing piece was sent before the lowest piece found: the 10 paddings
--                    before it;
--   awaiting         the finalize comes after the last chunk: the 10 paddings after it.
-- Conflicts and total mismatches are not a scanning problem and are left out. `padding` is the
-- seed runner's --slot-padding default (200). already_scanned: the window lies inside slots that
-- iq.scan_coverage says were scanned over every account (then rescanning the same source will not
-- help; try another).
--   iq-etl sql --file sql/queries/slot_windows_to_rescan.sql
WITH
    200 AS padding,
    (SELECT groupArray((first_slot, last_slot)) FROM iq.scan_coverage
     WHERE kind = 'scanned' AND empty(session_pdas) AND notEmpty(program_ids)) AS scanned_runs,
    windows AS (
        SELECT
            upload_key,
            multiIf(
                status = 'awaiting_finalize', toUInt64(last_slot + 1),
                missing_window_first_slot IS NULL, toUInt64(greatest(ifNull(missing_window_last_slot, last_slot), 10 * padding) - 10 * padding),
                toUInt64(greatest(assumeNotNull(missing_window_first_slot), padding) - padding)) AS window_first,
            multiIf(
                status = 'awaiting_finalize', toUInt64(last_slot + 10 * padding),
                toUInt64(ifNull(missing_window_last_slot, last_slot) + padding)) AS window_last
        FROM iq.session_completeness
        WHERE status IN ('missing_chunks', 'awaiting_finalize')
    ),
    ordered AS (
        SELECT
            *,
            max(window_last) OVER (ORDER BY window_first, window_last ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS reach_before,
            row_number() OVER (ORDER BY window_first, window_last) AS position
        FROM windows
    ),
    runs AS (
        SELECT
            *,
            sum(if(position = 1 OR window_first > reach_before + 1, 1, 0)) OVER (ORDER BY window_first, window_last ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS run_id
        FROM ordered
    ),
    merged AS (
        SELECT
            min(window_first) AS first_slot,
            max(window_last) AS last_slot,
            count() AS uploads,
            arraySlice(groupArray(upload_key), 1, 10) AS some_uploads
        FROM runs
        GROUP BY run_id
    )
SELECT
    first_slot,
    last_slot,
    concat(toString(first_slot), ':', toString(last_slot)) AS slot_spec,
    last_slot - first_slot + 1 AS slots,
    uploads,
    some_uploads,
    arrayExists(r -> r.1 <= first_slot AND r.2 >= last_slot, scanned_runs) AS already_scanned
FROM merged
ORDER BY first_slot
