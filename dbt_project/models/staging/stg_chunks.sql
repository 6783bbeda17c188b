-- Session chunks (G2 Pinocchio and legacy, G3 post_chunk), one row per copy seen on chain, with
-- the upload they belong to. Copies are not merged here: int_session_chunks chooses among them.
with chunk_instructions as (
    {{ raw_instructions_final("kind = 'chunk'") }}
)

select
    {{ session_upload_key('generation', 'session_account', 'session_id') }} as upload_key,
    session_account as upload_group,
    generation,
    program_id,
    instruction,
    session_account,
    session_id,
    assumeNotNull(chunk_index) as chunk_index,
    method,
    payload,
    slot,
    signature,
    tx_index,
    ix_index,
    inner_index,
    tx_failed,
    tx_status,
    ingested_at
from chunk_instructions
where chunk_index is not null
