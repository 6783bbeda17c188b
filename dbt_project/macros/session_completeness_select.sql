{#- session_completeness' SELECT for one pass of int_changed_groups (as int_uploads_select): the
    uploads of that pass's refresh groups. The model runs pass 0, its post-hook the others. The
    model's header (models/marts/session_completeness.sql) says what it holds. -#}
{% macro session_completeness_select(pass) -%}
with
changed_groups as (
    -- the groups of this pass (every group on a full refresh, the changed ones on an incremental build)
    select refresh_group from {{ ref('int_changed_groups') }} where pass = {{ pass }}
),

current_uploads as (
    select *
    from {{ ref('int_uploads') }}
    where refresh_group in (select refresh_group from changed_groups)
),

chunk_stats as (
    select
        upload_key,
        arraySort(groupArrayIf((chunk_index, chosen_slot), copies_seen > 0)) as present_chunks,
        toUInt32(countIf(copies_seen > 1)) as duplicated_chunks,
        arraySort(groupArrayIf(chunk_index, distinct_payloads > 1)) as conflicting_indexes,
        arraySort(groupArrayIf(chunk_index, copies_seen = 0 and failed_copies > 0)) as failed_only_indexes,
        arraySort(groupArrayIf(chunk_index, copies_seen > 1 and distinct_payloads = 1)) as duplicated_indexes,
        toUInt32(sum(copies_seen)) as successful_chunk_copies,
        toUInt32(sum(failed_copies)) as failed_chunk_copies,
        argMinIf(method, chunk_index, copies_seen > 0) as first_chunk_method,
        max(source_ingested_at) as chunks_ingested_at
    from {{ ref('int_session_chunks') }}
    -- upload_group first: the table's sort key, so only those groups' granules are read
    where upload_group in (select upload_group from current_uploads)
      and upload_key in (select upload_key from current_uploads)
    group by upload_key
),

g1_pieces as (
    -- the pieces of complete-looking G1 lists in walk order, as Merkle leaves (macros/verification.sql)
    select
        upload_key,
        toUInt32(count()) as root_leaves,
        arrayMap(leaf -> leaf.2, arraySort(leaf -> leaf.1,
            groupArray((chunk_index, {{ g1_merkle_leaf('payload') }})))) as leaves
    from {{ ref('int_session_chunks') }}
    where upload_group in (select upload_group from current_uploads)
      and upload_key in (
            select upload_key from current_uploads
            where generation = 'g1' and upload_shape = 'linked_list' and missing_piece_signature = '')
      and copies_seen > 0
    group by upload_key
),

g1_roots as (
    select upload_key as g1_upload_key, root_leaves as g1_root_leaves, {{ g1_merkle_root('leaves') }} as g1_computed_root
    from g1_pieces
),

uploads as (
    select
        u.*,
        c.present_chunks as present_chunks,
        c.duplicated_chunks as duplicated_chunks,
        c.conflicting_indexes as conflicting_indexes,
        c.failed_only_indexes as failed_only_indexes,
        c.duplicated_indexes as duplicated_indexes,
        c.successful_chunk_copies as successful_chunk_copies,
        c.failed_chunk_copies as failed_chunk_copies,
        c.first_chunk_method as first_chunk_method,
        greatest(u.source_ingested_at, c.chunks_ingested_at) as all_ingested_at
    from current_uploads as u
    left join chunk_stats as c on c.upload_key = u.upload_key
),

rooted as (
    -- a separate step: a third join under `u.*` above makes ClickHouse 26.9 lose upload_key
    select
        u.*,
        toUInt32(coalesce(r.g1_root_leaves, 0)) as root_leaves,
        coalesce(r.g1_computed_root, '') as computed_root
    from uploads as u
    left join g1_roots as r on r.g1_upload_key = u.upload_key
),

expected_totals as (
    select
        *,
        upload_shape = 'linked_list' and missing_piece_signature = '' as linked_walk_complete,
        arrayMap(x -> x.1, present_chunks) as present_indexes,
        arrayMap(x -> x.2, present_chunks) as present_slots,
        CAST(multiIf(
            linked_walk_complete, toNullable(chunk_rows),
            expected_total) AS Nullable(UInt32)) as chunks_expected,
        linked_walk_complete and metadata_total is not null and metadata_total != chunk_rows as linked_total_differs
    from rooted
),

measured as (
    select
        *,
        -- indexes are checked against the declared total, or against what was seen when no total is known
        -- (a linked list's indexes count from the lowest piece reached, so it has no index gaps:
        -- what is missing there is named by missing_piece_signature)
        multiIf(
            upload_shape = 'linked_list', toInt64(length(present_indexes)),
            chunks_expected is not null, toInt64(assumeNotNull(chunks_expected)),
            empty(present_indexes), toInt64(0),
            toInt64(arrayMax(present_indexes)) + 1) as index_bound,
        arrayFilter(i -> i < index_bound, present_indexes) as present_in_range,
        arrayFilter((s, i) -> i < index_bound, present_slots, present_indexes) as present_in_range_slots,
        toUInt32(length(present_indexes) - length(present_in_range)) as chunks_beyond_total,
        {{ gaps_with_slots('present_in_range', 'present_in_range_slots', 'index_bound', 'first_slot', 'last_slot') }} as gaps
    from expected_totals
),

classified as (
    select
        *,
        multiIf(
            total_disagreement or linked_total_differs or chunks_beyond_total > 0 or chunks_expected = 0
                or (is_finalized and upload_shape = 'session' and chunks_expected is null), 'total_mismatch',
            notEmpty(conflicting_indexes), 'conflicting_chunks',
            upload_shape = 'linked_list' and missing_piece_signature != '', 'missing_chunks',
            notEmpty(gaps), 'missing_chunks',
            not is_finalized, 'awaiting_finalize',
            'complete') as status,
        arrayMap(g -> (toUInt32(g.1), toUInt32(g.2)), gaps) as missing_ranges
    from measured
),

verified as (
    -- verification qualifies a status: only a complete G1 list can be checked (macros/verification.sql)
    select
        *,
        {{ verification_verdict() }} as verification
    from classified
)

select
    upload_key,
    upload_shape,
    upload_group,
    refresh_group,
    generation,
    program_id,
    session_account,
    session_id,
    status,
    multiIf(
        status = 'conflicting_chunks',
            concat('copies of chunk(s) ', {{ compact_ranges(runs_of('conflicting_indexes')) }}, ' have different bytes'),
        status = 'total_mismatch' and total_disagreement,
            concat('finalize/metadata totals disagree (declared ', toString(declared_total), ', metadata ', toString(metadata_total), ')'),
        status = 'total_mismatch' and linked_total_differs,
            concat('linked list has ', toString(chunk_rows), ' pieces, metadata says ', toString(metadata_total)),
        status = 'total_mismatch' and chunks_beyond_total > 0,
            concat(toString(chunks_beyond_total), ' chunk(s) at or beyond the declared total ', toString(chunks_expected)),
        status = 'total_mismatch' and chunks_expected = 0, 'declared total is 0',
        status = 'total_mismatch', 'finalized without a declared total',
        status = 'missing_chunks' and upload_shape = 'linked_list',
            concat('piece ', missing_piece_signature, ' not found',
                   if(missing_piece_failed, ' (its transaction failed)', '')),
        status = 'awaiting_finalize',
            concat('no finalize seen yet; ', toString(length(present_in_range)), ' chunk(s) present'),
        status = 'missing_chunks' and not is_finalized,
            concat('chunk(s) ', {{ compact_ranges('missing_ranges') }}, ' missing below the highest index seen; no finalize yet'),
        status = 'missing_chunks',
            concat(toString(arraySum(arrayMap(g -> g.2 - g.1 + 1, gaps))), ' of ', toString(chunks_expected),
                   ' chunk(s) missing: ', {{ compact_ranges('missing_ranges') }}),
        '') as status_reason,
    verification,
    {{ verification_reason() }} as verification_reason,
    chunks_expected,
    toUInt32(length(present_in_range)) as chunks_present,
    chunks_beyond_total,
    toUInt64(if(upload_shape = 'linked_list',
        if(missing_piece_signature != '' and chunks_expected > length(present_in_range), chunks_expected - length(present_in_range), 0),
        arraySum(arrayMap(g -> g.2 - g.1 + 1, gaps)))) as chunks_missing,
    missing_ranges,
    {{ compact_ranges('missing_ranges') }} as missing_ranges_text,
    arraySlice(arrayFlatten(arrayMap(
        r -> range(r.1, toUInt32(least(toUInt64(r.2) + 1, toUInt64(r.1) + {{ var('iq_max_missing_listed') }}))),
        missing_ranges)), 1, {{ var('iq_max_missing_listed') }}) as missing_indexes,
    chunks_missing > {{ var('iq_max_missing_listed') }} as missing_indexes_truncated,
    CAST(if(chunks_expected > 0, length(present_in_range) / chunks_expected, NULL) AS Nullable(Float64)) as coverage_ratio,
    CAST(multiIf(
        upload_shape = 'linked_list', NULL,
        notEmpty(gaps), arrayMin(arrayMap(g -> least(g.3, g.4), gaps)),
        NULL) AS Nullable(UInt64)) as missing_window_first_slot,
    CAST(multiIf(
        upload_shape = 'linked_list' and missing_piece_signature != '', coalesce(lowest_piece_slot, finalize_slot),
        upload_shape = 'linked_list', NULL,
        notEmpty(gaps), arrayMax(arrayMap(g -> greatest(g.3, g.4), gaps)),
        NULL) AS Nullable(UInt64)) as missing_window_last_slot,
    duplicated_chunks,
    {{ compact_ranges(runs_of('present_indexes')) }} as present_ranges_text,
    duplicated_indexes,
    conflicting_indexes,
    failed_only_indexes,
    successful_chunk_copies,
    failed_chunk_copies,
    failed_chunk_rows,
    failed_finalizes,
    is_finalized,
    finalize_count,
    bundle_count,
    declared_total,
    metadata_total,
    total_disagreement,
    missing_piece_signature,
    missing_piece_failed,
    CAST(first_chunk_method AS Nullable(UInt8)) as method,
    merkle_root,
    committed_root,
    computed_root,
    metadata,
    filename,
    filetype,
    seq,
    created_slot,
    first_slot,
    last_slot,
    first_signature,
    last_signature,
    finalize_slot,
    finalize_signature,
    all_ingested_at as source_ingested_at,
    -- the dbt invocation that wrote the row (tests of an incremental build check this build's rows)
    '{{ invocation_id }}' as build_id
from verified
{%- endmacro %}
