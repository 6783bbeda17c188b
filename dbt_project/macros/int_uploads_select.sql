{#- int_uploads' SELECT for one pass (int_changed_groups.pass): the uploads of that pass's refresh
    groups. The model runs pass 0; its post-hook insert_remaining_passes(int_uploads_select) inserts the others.
    One SQL for a full refresh (int_changed_groups lists every group) and an incremental build (the
    changed groups). The model's header (models/intermediate/int_uploads.sql) says what it holds. -#}
{% macro int_uploads_select(pass) -%}
{#- int_changed_raw rows this pass reads: its own (sorted on pass: a range of the table), and the
    linked-list rows every pass reads (macro raw_pass) -#}
{%- set own_rows = "pass = " ~ pass -%}
{%- set linked_rows = "pass = " ~ linked_rows_pass() -%}
with

changed_groups as (
    -- the groups of this pass (every group on a full refresh, the changed ones on an incremental build)
    select refresh_group from {{ ref('int_changed_groups') }} where pass = {{ pass }}
),

changed_walks as (
    -- the changed lists' walks, selected once per build (int_changed_walks: a CTE is re-run at every use)
    select * from {{ ref('int_changed_walks') }} where pass = {{ pass }}
),

changed_tails as (
    -- tails of the changed lists' walks, and the tails of the changed `list:` groups themselves
    select upload_key as tail from changed_walks
    union distinct
    select {{ linked_group_tail('refresh_group') }} from changed_groups
    where {{ linked_group_tail('refresh_group') }} != ''
),


session_rows as (
    -- the rows of every session upload, by source (c: chunks, f: finalizes with bundles
    -- attached, s: G3 create_session), aggregated once below: one group-by that spills, not three
    -- aggregations each run twice (keys, then a join table) and held as join tables at once,
    -- which set the 3M-row full build's peak RSS (docs/transform-scale.md)
    select
        'c' as src, upload_key, upload_group, generation, program_id, session_account, session_id,
        slot, tx_index, ix_index, inner_index, signature, tx_failed, ingested_at,
        false as is_bundle,
        CAST(NULL AS Nullable(UInt32)) as declared_total,
        CAST(NULL AS Nullable(UInt32)) as metadata_total,
        '' as merkle_root,
        '' as metadata,
        CAST(NULL AS Nullable(UInt64)) as seq
    
    -- the changed groups' raw rows, deduplicated once per build (int_changed_raw)
    from ({{ stg_chunks_select(own_rows ~ " and session_account in (select refresh_group from changed_groups)", ref('int_changed_raw')) }})
    

    union all

    select
        'f', upload_key, upload_group, generation, program_id, session_account, session_id,
        slot, tx_index, ix_index, inner_index, signature, tx_failed, ingested_at,
        is_bundle,
        CAST(declared_total AS Nullable(UInt32)),
        CAST(metadata_total AS Nullable(UInt32)),
        merkle_root,
        metadata,
        CAST(NULL AS Nullable(UInt64))
    
    -- int_finalizes over the changed groups' raw rows (int_finalizes_select, int_changed_raw)
    from ({{ int_finalizes_select("(select refresh_group from changed_groups)", ref('int_changed_raw'), own_rows) }})
    

    union all

    select
        's', upload_key, '', generation, program_id, session_account, '',
        slot, tx_index, ix_index, inner_index, signature, tx_failed, ingested_at,
        false,
        CAST(NULL AS Nullable(UInt32)),
        CAST(NULL AS Nullable(UInt32)),
        '',
        '',
        CAST(seq AS Nullable(UInt64))
    
    from ({{ stg_session_creations_select(own_rows ~ " and session_account in (select refresh_group from changed_groups)", ref('int_changed_raw')) }})
    
),

session_groups as (
    -- per upload key, each source's figures (c_*, f_*, s_*); a source with no row gives its
    -- key '' and default values, as a LEFT JOIN on it would
    select
        upload_key,
        -- chunks
        if(countIf(src = 'c') > 0, upload_key, '') as c_upload_key,
        anyIf(upload_group, src = 'c') as c_rows_group,
        anyIf(generation, src = 'c' and not tx_failed) as c_generation,
        anyIf(program_id, src = 'c' and not tx_failed) as c_program_id,
        anyIf(session_account, src = 'c') as c_session_account,
        anyIf(session_id, src = 'c') as c_session_id,
        minIf(slot, src = 'c' and not tx_failed) as c_first_slot,
        maxIf(slot, src = 'c' and not tx_failed) as c_last_slot,
        argMinIf(signature, {{ chain_order() }}, src = 'c' and not tx_failed) as c_first_signature,
        argMaxIf(signature, {{ chain_order() }}, src = 'c' and not tx_failed) as c_last_signature,
        countIf(src = 'c' and not tx_failed) as c_chunk_rows,
        countIf(src = 'c' and tx_failed) as c_failed_chunk_rows,
        maxIf(ingested_at, src = 'c') as c_source_ingested_at,
        -- finalizes
        if(countIf(src = 'f') > 0, upload_key, '') as f_upload_key,
        anyIf(upload_group, src = 'f') as f_rows_group,
        anyIf(generation, src = 'f' and not tx_failed) as f_generation,
        anyIf(program_id, src = 'f' and not tx_failed) as f_program_id,
        anyIf(session_account, src = 'f') as f_session_account,
        anyIf(session_id, src = 'f') as f_session_id,
        countIf(src = 'f' and not tx_failed) as f_finalize_count,
        countIf(src = 'f' and tx_failed) as f_failed_finalizes,
        argMinIf(declared_total, {{ chain_order() }}, src = 'f' and not tx_failed and declared_total is not null) as f_first_declared_total,
        argMinIf(metadata_total, {{ chain_order() }}, src = 'f' and not tx_failed and metadata_total is not null) as f_first_metadata_total,
        arrayDistinct(arrayConcat(
            groupArrayIf(assumeNotNull(declared_total), src = 'f' and not tx_failed and declared_total is not null),
            groupArrayIf(assumeNotNull(metadata_total), src = 'f' and not tx_failed and metadata_total is not null))) as f_declared_totals,
        argMinIf(merkle_root, {{ chain_order() }}, src = 'f' and not tx_failed) as f_merkle_root,
        argMinIf(metadata, {{ chain_order() }}, src = 'f' and not tx_failed) as f_metadata,
        argMinIf(slot, {{ chain_order() }}, src = 'f' and not tx_failed) as f_finalize_slot,
        argMinIf(signature, {{ chain_order() }}, src = 'f' and not tx_failed) as f_finalize_signature,
        minIf(slot, src = 'f' and not tx_failed) as f_first_slot,
        maxIf(slot, src = 'f' and not tx_failed) as f_last_slot,
        argMaxIf(signature, {{ chain_order() }}, src = 'f' and not tx_failed) as f_last_signature,
        countIf(src = 'f' and not tx_failed and is_bundle) as f_bundle_count,
        maxIf(ingested_at, src = 'f') as f_source_ingested_at,
        -- G3 create_session
        if(countIf(src = 's') > 0, upload_key, '') as s_upload_key,
        anyIf(generation, src = 's' and not tx_failed) as s_generation,
        anyIf(program_id, src = 's' and not tx_failed) as s_program_id,
        argMinIf(seq, slot, src = 's' and not tx_failed) as s_seq,
        minIf(slot, src = 's' and not tx_failed) as s_created_slot,
        argMinIf(signature, {{ chain_order() }}, src = 's' and not tx_failed) as s_created_signature,
        countIf(src = 's' and not tx_failed) as s_creation_count,
        maxIf(ingested_at, src = 's') as s_source_ingested_at
    from session_rows
    group by upload_key
),

session_uploads as (
    select
        -- identity
        upload_key,
        'session' as upload_shape,
        -- the session account the rows name (the refresh group of their raw rows, see refresh_group_of_raw)
        multiIf(c_upload_key != '', c_rows_group, f_upload_key != '', f_rows_group, s_upload_key) as upload_group,
        coalesce(nullIf(f_generation, ''), nullIf(c_generation, ''), nullIf(s_generation, ''), 'unknown') as generation,
        coalesce(nullIf(f_program_id, ''), nullIf(c_program_id, ''), nullIf(s_program_id, ''), '') as program_id,
        coalesce(nullIf(c_session_account, ''), nullIf(f_session_account, ''), upload_key) as session_account,
        coalesce(nullIf(c_session_id, ''), f_session_id, '') as session_id,
        -- finalize counts
        f_finalize_count > 0 as is_finalized,
        toUInt32(f_finalize_count) as finalize_count,
        toUInt32(f_failed_finalizes) as failed_finalizes,
        toUInt32(f_bundle_count) as bundle_count,
        -- totals
        f_first_declared_total as declared_total,
        f_first_metadata_total as metadata_total,
        coalesce(f_first_declared_total, f_first_metadata_total) as expected_total,
        length(f_declared_totals) > 1 as total_disagreement,
        -- content
        coalesce(f_merkle_root, '') as merkle_root,
        '' as committed_root,
        coalesce(f_metadata, '') as metadata,
        s_seq as seq,
        -- slots and signatures
        if(s_creation_count > 0, s_created_slot, NULL) as created_slot,
        least(
            if(c_chunk_rows > 0, c_first_slot, {{ no_slot() }}),
            if(f_finalize_count > 0, f_first_slot, {{ no_slot() }}),
            if(s_creation_count > 0, s_created_slot, {{ no_slot() }})) as first_slot_raw,
        greatest(
            if(c_chunk_rows > 0, c_last_slot, 0),
            if(f_finalize_count > 0, f_last_slot, 0)) as last_slot,
        multiIf(c_chunk_rows > 0, c_first_signature, s_creation_count > 0, s_created_signature, f_finalize_signature) as first_signature,
        if(f_finalize_count > 0 and (c_chunk_rows = 0 or f_last_slot >= c_last_slot), f_last_signature, c_last_signature) as last_signature,
        if(f_finalize_count > 0, f_finalize_slot, NULL) as finalize_slot,
        if(f_finalize_count > 0, f_finalize_signature, '') as finalize_signature,
        -- chunk counts
        toUInt32(c_chunk_rows) as chunk_rows,
        toUInt32(c_failed_chunk_rows) as failed_chunk_rows,
        -- linked-list only
        '' as missing_piece_signature,
        false as missing_piece_failed,
        CAST(NULL AS Nullable(UInt64)) as lowest_piece_slot,
        -- watermark
        greatest(c_source_ingested_at, f_source_ingested_at, s_source_ingested_at) as source_ingested_at,
        '' as list_root
    from session_groups
),

linked_indexes as (
    
    -- the tails of the changed lists, and named tails that are their own group (no piece found),
    -- read for those tails only under FINAL (stg_linked_indexes_select)
    select *
    from ({{ stg_linked_indexes_select(linked_rows ~ " and (tail_tx in (select tail from changed_tails) or on_chain_path in (select tail from changed_tails))", ref('int_changed_raw')) }})
    where tail_signature in (select tail from changed_tails)
    
),

indexed_tails as (
    select distinct tail_signature as upload_key
    from linked_indexes
    where not tx_failed
),

current_walks as (
    -- the walks of current tails: named by an index, or a piece nobody points at (a tail that a
    -- later piece extended keeps stale rows in int_linked_walks; they are not read)
    select *
    
    from changed_walks
    where upload_key in (select upload_key from indexed_tails)
       or upload_key not in (select before_tx from {{ ref('int_linked_pieces') }}
                             where before_tx in (select upload_key from changed_walks))
    
),

walk_summary as (
    select
        upload_key,
        upload_key in (select upload_key from indexed_tails) as is_indexed_tail,
        toUInt32(count()) as pieces_found,
        argMax(before_tx, depth) as lowest_before_tx,
        argMax(slot, depth) as lowest_piece_slot,
        min(slot) as first_slot,
        max(slot) as last_slot,
        argMax(piece_signature, depth) as first_signature,
        any(generation) as generation,
        any(program_id) as program_id,
        any(root_signature) as root_signature,
        max(ingested_at) as source_ingested_at
    from current_walks
    group by upload_key
),

indexed_pieces as (
    select distinct piece_signature
    from current_walks
    where upload_key in (select upload_key from indexed_tails)
),

index_rows as (
    select
        tail_signature as upload_key,
        countIf(not tx_failed) as index_count,
        countIf(tx_failed) as failed_indexes,
        anyIf(generation, not tx_failed) as generation,
        anyIf(program_id, not tx_failed) as program_id,
        argMinIf(metadata, {{ chain_order() }}, not tx_failed) as metadata,
        argMinIf(metadata_total, {{ chain_order() }}, not tx_failed and metadata_total is not null) as first_metadata_total,
        argMinIf(handle, {{ chain_order() }}, not tx_failed) as handle,
        argMinIf(type_field, {{ chain_order() }}, not tx_failed) as type_field,
        argMinIf(offset, {{ chain_order() }}, not tx_failed) as offset,
        argMinIf(slot, {{ chain_order() }}, not tx_failed) as index_slot,
        argMinIf(signature, {{ chain_order() }}, not tx_failed) as index_signature,
        max(ingested_at) as source_ingested_at
    from linked_indexes
    group by tail_signature
),

linked_keys as (
    select upload_key from (
        select upload_key from index_rows where index_count > 0
        union distinct
        select upload_key from walk_summary
        where not is_indexed_tail
          and upload_key not in (
              select upload_key from current_walks
              where piece_signature in (select piece_signature from indexed_pieces))
    )
),

failed_piece_signatures as (
    
    select distinct signature
    from ({{ stg_linked_pieces_select(linked_rows ~ " and signature in (select lowest_before_tx from walk_summary)", ref('int_changed_raw')) }})
    where tx_failed
    
),

linked_uploads as (
    select
        -- identity
        k.upload_key as upload_key,
        'linked_list' as upload_shape,
        k.upload_key as upload_group,
        multiIf(i.generation != '', i.generation, w.generation != '', w.generation, 'unknown') as generation,
        if(i.program_id != '', i.program_id, w.program_id) as program_id,
        '' as session_account,
        '' as session_id,
        -- finalize counts (an index is the list's finalize)
        i.index_count > 0 as is_finalized,
        toUInt32(i.index_count) as finalize_count,
        toUInt32(i.failed_indexes) as failed_finalizes,
        toUInt32(0) as bundle_count,
        -- totals
        CAST(NULL AS Nullable(UInt32)) as declared_total,
        i.first_metadata_total as metadata_total,
        i.first_metadata_total as expected_total,
        false as total_disagreement,
        -- content
        '' as merkle_root,
        -- G1: db_code_in offset, the Merkle root of the pieces (docs/protocol.md, Verification)
        if(i.generation = 'g1', i.offset, '') as committed_root,
        multiIf(
            i.metadata != '', i.metadata,
            i.generation = 'g1', toJSONString(map('handle', i.handle, 'type_field', i.type_field, 'offset', i.offset)),
            '') as metadata,
        CAST(NULL AS Nullable(UInt64)) as seq,
        -- slots and signatures
        CAST(NULL AS Nullable(UInt64)) as created_slot,
        least(if(w.pieces_found > 0, w.first_slot, {{ no_slot() }}),
              if(i.index_count > 0, i.index_slot, {{ no_slot() }})) as first_slot_raw,
        greatest(w.last_slot, if(i.index_count > 0, i.index_slot, 0)) as last_slot,
        w.first_signature as first_signature,
        if(i.index_count > 0, i.index_signature, k.upload_key) as last_signature,
        if(i.index_count > 0, i.index_slot, NULL) as finalize_slot,
        if(i.index_count > 0, i.index_signature, '') as finalize_signature,
        -- chunk counts
        w.pieces_found as chunk_rows,
        toUInt32(0) as failed_chunk_rows,
        -- linked-list only
        multiIf(w.pieces_found = 0, k.upload_key, w.lowest_before_tx = 'Genesis', '', w.lowest_before_tx) as missing_piece_signature,
        missing_piece_signature in (select signature from failed_piece_signatures) as missing_piece_failed,
        if(w.pieces_found > 0, w.lowest_piece_slot, NULL) as lowest_piece_slot,
        -- watermark
        greatest(w.source_ingested_at, i.source_ingested_at) as source_ingested_at,
        -- refresh group: the list's root (its tail when no piece was found)
        if(w.pieces_found > 0, w.root_signature, k.upload_key) as list_root
    from linked_keys as k
    left join walk_summary as w on w.upload_key = k.upload_key
    left join index_rows as i on i.upload_key = k.upload_key
),

inline_rows as (
    select
        upload_key,
        countIf(not tx_failed) as ok_count,
        countIf(tx_failed) as failed_count,
        anyIf(generation, not tx_failed) as generation,
        anyIf(program_id, not tx_failed) as program_id,
        argMinIf(metadata, slot, not tx_failed) as metadata,
        argMinIf(metadata_total, slot, not tx_failed and metadata_total is not null) as first_metadata_total,
        min(slot) as first_slot,
        max(ingested_at) as source_ingested_at
    
    from ({{ stg_inline_uploads_select(own_rows ~ " and signature in (select refresh_group from changed_groups)", ref('int_changed_raw')) }})
    
    group by upload_key
),

inline_uploads as (
    select
        -- identity
        upload_key,
        'inline' as upload_shape,
        upload_key as upload_group,
        generation,
        program_id,
        '' as session_account,
        '' as session_id,
        -- finalize counts (the code-in is the finalize)
        ok_count > 0 as is_finalized,
        toUInt32(ok_count) as finalize_count,
        toUInt32(failed_count) as failed_finalizes,
        toUInt32(0) as bundle_count,
        -- totals
        CAST(NULL AS Nullable(UInt32)) as declared_total,
        first_metadata_total as metadata_total,
        toUInt32(1) as expected_total,
        false as total_disagreement,
        -- content
        '' as merkle_root,
        '' as committed_root,
        metadata,
        CAST(NULL AS Nullable(UInt64)) as seq,
        -- slots and signatures
        CAST(NULL AS Nullable(UInt64)) as created_slot,
        first_slot as first_slot_raw,
        first_slot as last_slot,
        upload_key as first_signature,
        upload_key as last_signature,
        first_slot as finalize_slot,
        upload_key as finalize_signature,
        -- chunk counts
        toUInt32(ok_count) as chunk_rows,
        toUInt32(failed_count) as failed_chunk_rows,
        -- linked-list only
        '' as missing_piece_signature,
        false as missing_piece_failed,
        CAST(NULL AS Nullable(UInt64)) as lowest_piece_slot,
        -- watermark
        source_ingested_at,
        '' as list_root
    from inline_rows
),

all_uploads as (
    -- UNION ALL matches columns by position: the three branches list the same columns, section
    -- by section, in the same order
    select * from session_uploads
    union all
    select * from linked_uploads
    union all
    select * from inline_uploads
)

select
    upload_key,
    upload_shape,
    upload_group,
    if(upload_shape = 'linked_list', {{ linked_group('list_root') }}, upload_group) as refresh_group,
    generation,
    program_id,
    session_account,
    session_id,
    is_finalized,
    finalize_count,
    failed_finalizes,
    bundle_count,
    CAST(declared_total AS Nullable(UInt32)) as declared_total,
    CAST(metadata_total AS Nullable(UInt32)) as metadata_total,
    CAST(expected_total AS Nullable(UInt32)) as expected_total,
    total_disagreement,
    merkle_root,
    committed_root,
    metadata,
    JSONExtractString(metadata, 'filename') as filename,
    JSONExtractString(metadata, 'filetype') as filetype,
    CAST(seq AS Nullable(UInt64)) as seq,
    CAST(created_slot AS Nullable(UInt64)) as created_slot,
    toUInt64(if(first_slot_raw = {{ no_slot() }}, 0, first_slot_raw)) as first_slot,
    toUInt64(last_slot) as last_slot,
    first_signature,
    last_signature,
    CAST(finalize_slot AS Nullable(UInt64)) as finalize_slot,
    finalize_signature,
    chunk_rows,
    failed_chunk_rows,
    missing_piece_signature,
    missing_piece_failed,
    CAST(lowest_piece_slot AS Nullable(UInt64)) as lowest_piece_slot,
    source_ingested_at,
    -- the dbt invocation that wrote the row (tests of an incremental build check this build's rows)
    '{{ invocation_id }}' as build_id
from all_uploads
where refresh_group in (select refresh_group from changed_groups)
{%- endmacro %}
