{{ config(materialized='table', engine='Join(ANY, LEFT, signature)') }}
-- Successful linked-list pieces, one row per transaction signature (before_tx names a
-- transaction), without their bytes. A Join-engine table: the before_tx walk looks each next
-- piece up with joinGet (a hash lookup) instead of joining against every piece at every step,
-- which made a 1000-piece list cost 1000 scans (26 s for 200 k pieces; 1.4 s with joinGet).
-- A transaction carrying several send_code pieces counts once, with its first piece's before_tx.
with successful_pieces as (
    select *
    from {{ ref('stg_linked_pieces') }}
    where not tx_failed
)

select
    signature,
    argMin(before_tx, (ix_index, inner_index)) as before_tx,
    any(generation) as generation,
    any(program_id) as program_id,
    min(slot) as slot,
    min(tx_index) as tx_index,
    toUInt32(count()) as piece_instructions,
    max(ingested_at) as ingested_at,
    toUInt8(1) as present
from successful_pieces
group by signature
