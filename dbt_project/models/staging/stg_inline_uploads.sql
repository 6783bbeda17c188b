-- G3 code-in finalisers with an empty on_chain_path: the whole file is inline in metadata.data
-- (the decoder puts it in payload). The upload is keyed by the code-in's signature.
select
    signature as upload_key,
    signature as upload_group,
    generation,
    program_id,
    instruction,
    payload,
    metadata,
    {{ metadata_uint32('metadata', 'total_chunks') }} as metadata_total,
    slot,
    signature,
    tx_index,
    ix_index,
    inner_index,
    tx_failed,
    ingested_at
from ({{ raw_instructions_final("generation = 'g3' and instruction in " ~ g3_code_in_instructions()) }})
where on_chain_path = ''
