-- Instructions that name a linked list's tail (its last piece's signature): G1 db_code_in
-- (tail_tx; handle, type_field and offset - a Merkle root - ride along) and G3 code-in finalisers
-- whose on_chain_path is a signature (80+ characters).
with g1_indexes as (
    select *, tail_tx as tail_signature
    from ({{ raw_instructions_final("kind = 'linked_index' and generation = 'g1'") }})
),

g3_linked_code_ins as (
    select *, on_chain_path as tail_signature
    from ({{ raw_instructions_final("generation = 'g3' and instruction in " ~ g3_code_in_instructions()) }})
    where length(on_chain_path) >= {{ linked_tail_min_length() }}
),

index_instructions as (
    select * from g1_indexes
    union all
    select * from g3_linked_code_ins
)

select
    tail_signature,
    generation,
    program_id,
    instruction,
    metadata,
    {{ metadata_uint32('metadata', 'total_chunks') }} as metadata_total,
    handle,
    type_field,
    offset,
    slot,
    signature,
    tx_index,
    ix_index,
    inner_index,
    tx_failed,
    ingested_at
from index_instructions
where tail_signature != ''
