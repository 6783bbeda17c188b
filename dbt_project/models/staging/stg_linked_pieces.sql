-- Linked-list pieces (G1 and G3 send_code): each carries a piece of the file and before_tx, the
-- signature of the previous piece ("Genesis" for the first).
select
    signature,
    before_tx,
    payload,
    method,
    generation,
    program_id,
    slot,
    tx_index,
    ix_index,
    inner_index,
    tx_failed,
    ingested_at
from ({{ raw_instructions_final("kind = 'linked_piece'") }})
