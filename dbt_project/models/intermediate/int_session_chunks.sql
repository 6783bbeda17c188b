{{ config(
    materialized='incremental',
    incremental_strategy='delete+insert',
    on_schema_change='fail',
    unique_key='upload_group',
    engine='MergeTree()',
    order_by='(upload_group, upload_key, chunk_index)'
) }}
-- One row per (upload, chunk index) ever seen, for every upload shape:
--   sessions (G2, G3): the chosen copy is the earliest successful one in chain order
--     (slot, tx_index, ix_index, inner_index: macro chain_order); copies_seen counts successful
--     copies, failed_copies the failed ones; distinct_payloads > 1 means copies disagree (a conflict).
--     An index seen only in failed transactions has copies_seen = 0 (not present).
--   inline G3 uploads: one chunk, index 0, the payload from metadata.data.
--   linked lists: one chunk per piece reached by the before_tx walk, indexed from the lowest
--     piece reached (0 = the piece after Genesis when the walk is complete).
-- Incremental: a build recomputes whole upload groups (session account, inline signature, or
-- list tail) that have rows ingested since the previous build, and replaces them (delete+insert
-- on upload_group), so re-keyed or re-chosen rows never linger inside a group.
with
{% if incremental_build() %}
changed_groups as (
    select session_account as upload_group
    from {{ source('iq', 'raw_instructions') }}
    where ingested_at > {{ previous_watermark() }}
      and kind = 'chunk'
    union distinct
    select signature
    from {{ source('iq', 'raw_instructions') }}
    where ingested_at > {{ previous_watermark() }}
      and generation = 'g3' and instruction in {{ g3_code_in_instructions() }} and on_chain_path = ''
    union distinct
    select upload_key
    from {{ ref('int_linked_walks') }}
    where ingested_at > {{ previous_watermark() }}
),
{% endif %}

session_chunk_copies as (
    {% if incremental_build() %}
    -- stg_chunks narrowed to the changed groups before FINAL (see stg_chunks_select)
    {{ stg_chunks_select("session_account in (select upload_group from changed_groups)") }}
    {% else %}
    select * from {{ ref('stg_chunks') }}
    {% endif %}
),

session_chunks as (
    select
        upload_key,
        any(upload_group) as upload_group,
        'session' as upload_shape,
        chunk_index,
        argMinIf(payload, {{ chain_order() }}, not tx_failed) as chosen_payload,
        argMinIf(method, {{ chain_order() }}, not tx_failed) as chosen_method,
        argMinIf(slot, {{ chain_order() }}, not tx_failed) as chosen_slot,
        argMinIf(signature, {{ chain_order() }}, not tx_failed) as chosen_signature,
        toUInt32(countIf(not tx_failed)) as copies_seen,
        toUInt32(countIf(tx_failed)) as failed_copies,
        toUInt32(uniqExactIf(sipHash128(payload), not tx_failed)) as distinct_payloads,
        minIf(slot, tx_failed) as first_failed_slot,
        max(ingested_at) as source_ingested_at
    from session_chunk_copies
    group by upload_key, chunk_index
),

inline_uploads as (
    {% if incremental_build() %}
    -- narrowed to the changed groups before FINAL (stg_inline_uploads_select)
    select * from ({{ stg_inline_uploads_select("signature in (select upload_group from changed_groups)") }})
    {% else %}
    select * from {{ ref('stg_inline_uploads') }}
    {% endif %}
),

inline_chunks as (
    select
        upload_key,
        any(upload_group) as upload_group,
        'inline' as upload_shape,
        toUInt32(0) as chunk_index,
        argMinIf(payload, {{ chain_order() }}, not tx_failed) as chosen_payload,
        CAST(NULL AS Nullable(UInt8)) as chosen_method,
        argMinIf(slot, {{ chain_order() }}, not tx_failed) as chosen_slot,
        argMinIf(signature, {{ chain_order() }}, not tx_failed) as chosen_signature,
        toUInt32(countIf(not tx_failed)) as copies_seen,
        toUInt32(countIf(tx_failed)) as failed_copies,
        toUInt32(uniqExactIf(sipHash128(payload), not tx_failed)) as distinct_payloads,
        minIf(slot, tx_failed) as first_failed_slot,
        max(ingested_at) as source_ingested_at
    from inline_uploads
    group by upload_key
),

walks_to_build as (
    select upload_key, depth, piece_signature
    from {{ ref('int_linked_walks') }}
    {% if incremental_build() %}where upload_key in (select upload_group from changed_groups){% endif %}
),

linked_piece_rows as (
    -- the bytes of the pieces of those walks only (int_linked_pieces carries no payload)
    {% if incremental_build() %}
    {{ raw_instructions_final("kind = 'linked_piece' and signature in (select piece_signature from walks_to_build)") }}
    {% else %}
    select * from {{ ref('stg_linked_pieces') }}
    {% endif %}
),

piece_payloads as (
    -- a transaction with several send_code pieces contributes them in instruction order
    select
        signature,
        arrayStringConcat(arrayMap(p -> p.2, arraySort(p -> p.1, groupArray(((ix_index, inner_index), payload))))) as piece_payload,
        argMin(method, (ix_index, inner_index)) as piece_method,
        min(slot) as piece_slot,
        max(ingested_at) as piece_ingested_at
    from linked_piece_rows
    where not tx_failed
    group by signature
),

walked_pieces as (
    select
        w.upload_key as upload_key,
        w.depth as depth,
        max(w.depth) over (partition by w.upload_key) as max_depth,
        p.piece_payload as payload,
        p.piece_method as method,
        p.piece_slot as slot,
        p.signature as signature,
        p.piece_ingested_at as ingested_at
    from walks_to_build as w
    inner join piece_payloads as p on p.signature = w.piece_signature
),

linked_chunks as (
    select
        upload_key,
        upload_key as upload_group,
        'linked_list' as upload_shape,
        toUInt32(max_depth - depth) as chunk_index,
        payload as chosen_payload,
        method as chosen_method,
        slot as chosen_slot,
        signature as chosen_signature,
        toUInt32(1) as copies_seen,
        toUInt32(0) as failed_copies,
        toUInt32(1) as distinct_payloads,
        toUInt64(0) as first_failed_slot,
        ingested_at as source_ingested_at
    from walked_pieces
),

all_chunks as (
    select * from session_chunks
    union all
    select * from inline_chunks
    union all
    select * from linked_chunks
)

select
    upload_key,
    upload_group,
    upload_shape,
    chunk_index,
    chosen_payload as payload,
    chosen_method as method,
    chosen_slot,
    chosen_signature,
    copies_seen,
    failed_copies,
    distinct_payloads,
    first_failed_slot,
    source_ingested_at,
    -- the dbt invocation that wrote the row (tests of an incremental build check this build's rows)
    '{{ invocation_id }}' as build_id
from all_chunks
