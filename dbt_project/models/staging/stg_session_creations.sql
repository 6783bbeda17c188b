-- G3 create_session instructions: the session PDA and the user's sequence number.
select
    session_account as upload_key,
    session_account,
    generation,
    program_id,
    seq,
    slot,
    signature,
    tx_index,
    ix_index,
    inner_index,
    tx_failed,
    ingested_at
from ({{ raw_instructions_final("kind = 'create_session'") }})
