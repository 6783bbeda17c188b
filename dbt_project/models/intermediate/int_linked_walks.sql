{{ config(
    materialized='table',
    order_by='(upload_key, depth)',
    query_settings={'max_recursive_cte_evaluation_depth': var('iq_max_linked_depth') + 10}
) }}
-- The before_tx walk of every linked list, from its tail towards "Genesis" (PROTOCOL.md §6).
-- Tails are the signatures an index names (G1 db_code_in tail_tx, G3 code-in on_chain_path) plus
-- pieces no other piece points at (lists whose index has not been seen: int_uploads decides
-- whether they are uploads of their own). One row per (tail, depth): depth 0 is the tail.
-- A walk stops at "Genesis", at a before_tx that is not a known successful piece, or at
-- iq_max_linked_depth. Signatures commit to before_tx, so on-chain lists cannot loop.
with recursive
index_tails as (
    select distinct tail_signature as upload_key
    from {{ ref('stg_linked_indexes') }}
    where not tx_failed
),

pieces as (
    select signature, before_tx, slot, tx_index, generation, program_id, ingested_at
    from {{ ref('int_linked_pieces') }}
),

unreferenced_pieces as (
    select signature as upload_key
    from pieces
    where signature not in (select before_tx from pieces)
),

walk_starts as (
    select upload_key from index_tails
    union distinct
    select upload_key from unreferenced_pieces
),

walk as (
    select
        s.upload_key as upload_key,
        toUInt32(0) as depth,
        p.signature as piece_signature,
        p.before_tx as before_tx,
        p.slot as slot,
        p.tx_index as tx_index,
        p.generation as generation,
        p.program_id as program_id,
        p.ingested_at as ingested_at
    from walk_starts as s
    inner join pieces as p on p.signature = s.upload_key

    union all

    select
        w.upload_key,
        w.depth + 1,
        p.signature,
        p.before_tx,
        p.slot,
        p.tx_index,
        p.generation,
        p.program_id,
        p.ingested_at
    from walk as w
    inner join pieces as p on p.signature = w.before_tx
    where w.before_tx != 'Genesis'
      and w.depth + 1 < {{ var('iq_max_linked_depth') }}
)

select
    upload_key,
    depth,
    piece_signature,
    before_tx,
    slot,
    tx_index,
    generation,
    program_id,
    ingested_at,
    upload_key in (select upload_key from index_tails) as is_indexed_tail
from walk
