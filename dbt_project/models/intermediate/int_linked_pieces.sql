{{ config(materialized='view') }}
-- Successful linked-list pieces, one row per transaction signature (before_tx names a
-- transaction). A transaction carrying several send_code pieces contributes them in instruction
-- order, with the first piece's before_tx.
with successful_pieces as (
    select *
    from {{ ref('stg_linked_pieces') }}
    where not tx_failed
)

select
    signature,
    argMin(before_tx, (ix_index, inner_index)) as before_tx,
    arrayStringConcat(arrayMap(p -> p.2, arraySort(p -> p.1, groupArray(((ix_index, inner_index), payload))))) as payload,
    argMin(method, (ix_index, inner_index)) as method,
    any(generation) as generation,
    any(program_id) as program_id,
    min(slot) as slot,
    min(tx_index) as tx_index,
    count() as piece_instructions,
    max(ingested_at) as ingested_at
from successful_pieces
group by signature
