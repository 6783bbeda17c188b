{{ config(
    materialized='incremental',
    incremental_strategy='delete+insert',
    unique_key='upload_key',
    on_schema_change='fail',
    engine='MergeTree()',
    order_by='(upload_key, depth)',
    query_settings={'max_recursive_cte_evaluation_depth': var('iq_max_linked_depth') + 10}
) }}
-- The before_tx walk of every linked list, from its tail towards "Genesis" (docs/protocol.md §6).
-- Tails are the signatures an index names (G1 db_code_in tail_tx, G3 code-in on_chain_path) plus
-- pieces no other piece points at (lists whose index has not been seen; int_uploads decides
-- whether they are uploads of their own). One row per (tail, depth): depth 0 is the tail.
-- A walk stops at "Genesis", at a before_tx that is not a known successful piece, or at
-- iq_max_linked_depth. Signatures commit to before_tx, so on-chain lists cannot loop.
-- Incremental (delete+insert on the tail): pieces never change once on chain, so a walk changes
-- only when the piece it stopped at arrives. A build walks new tails (pieces ingested since the
-- previous build that nobody points at, index tails not walked yet) and the broken walks whose
-- missing piece is now known; nothing else is read. A tail that stopped being one (a later piece
-- points at it) keeps its old rows; int_uploads only reads the walks of current tails.
-- root_signature: the deepest piece the walk reached. Lists that share a piece share everything
-- below it, so they share their root: int_uploads recomputes linked lists by root.
-- Each step looks the next piece up in int_linked_pieces (a Join-engine table) with joinGet;
-- unit tests, whose fixtures are subqueries, take the JOIN form of the same walk
-- (macro linked_walk_lookup, overridden to 'join').
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

{% if incremental_build() %}
new_pieces as (
    select signature
    from pieces
    where ingested_at > (select max(ingested_at) - toIntervalSecond({{ var('iq_lookback_seconds') }}) from {{ this }})
),

walk_ends as (
    -- the deepest row of each walk built so far
    select upload_key, argMax(before_tx, depth) as end_before_tx
    from {{ this }}
    group by upload_key
),

walk_starts as (
    select upload_key from (
        -- index tails never walked (or whose tail piece was missing)
        select upload_key from index_tails
        where upload_key not in (select upload_key from walk_ends)
        union distinct
        -- new pieces nobody points at
        select signature as upload_key from new_pieces
        where signature not in (select before_tx from pieces where before_tx in (select signature from new_pieces))
        union distinct
        -- broken walks whose missing piece is now known (or re-ingested pieces of a broken walk)
        select upload_key from walk_ends
        where end_before_tx != 'Genesis'
          and (end_before_tx in (select signature from pieces) or upload_key in (select signature from new_pieces))
    )
),
{% else %}
walk_starts as (
    select upload_key from index_tails
    union distinct
    select upload_key from unreferenced_pieces
),
{% endif %}

{% if linked_walk_lookup() == 'join' %}
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

    select w.upload_key, w.depth + 1, p.signature, p.before_tx, p.slot, p.tx_index, p.generation, p.program_id,
           p.ingested_at
    from walk as w
    inner join pieces as p on p.signature = w.before_tx
    where w.depth + 1 < {{ var('iq_max_linked_depth') }}
)
{% else %}
{%- set lookup = "'" ~ ref('int_linked_pieces').schema ~ "." ~ ref('int_linked_pieces').identifier ~ "'" -%}
walk as (
    select
        upload_key,
        toUInt32(0) as depth,
        upload_key as piece_signature,
        joinGet({{ lookup }}, 'before_tx', upload_key) as before_tx,
        joinGet({{ lookup }}, 'slot', upload_key) as slot,
        joinGet({{ lookup }}, 'tx_index', upload_key) as tx_index,
        joinGet({{ lookup }}, 'generation', upload_key) as generation,
        joinGet({{ lookup }}, 'program_id', upload_key) as program_id,
        joinGet({{ lookup }}, 'ingested_at', upload_key) as ingested_at
    from walk_starts
    where joinGet({{ lookup }}, 'present', upload_key) = 1

    union all

    select
        upload_key,
        depth + 1,
        before_tx,
        joinGet({{ lookup }}, 'before_tx', before_tx),
        joinGet({{ lookup }}, 'slot', before_tx),
        joinGet({{ lookup }}, 'tx_index', before_tx),
        joinGet({{ lookup }}, 'generation', before_tx),
        joinGet({{ lookup }}, 'program_id', before_tx),
        joinGet({{ lookup }}, 'ingested_at', before_tx)
    from walk
    where joinGet({{ lookup }}, 'present', before_tx) = 1
      and depth + 1 < {{ var('iq_max_linked_depth') }}
)
{% endif %}

select
    upload_key,
    depth,
    piece_signature,
    before_tx,
    slot,
    tx_index,
    toString(generation) as generation,
    toString(program_id) as program_id,
    ingested_at,
    argMax(piece_signature, depth) over (partition by upload_key) as root_signature
from walk
