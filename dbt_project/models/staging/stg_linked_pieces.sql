-- Linked-list pieces (G1 and G3 send_code): each carries a piece of the file and before_tx, the
-- signature of the previous piece ("Genesis" for the first).
-- (The query is the stg_linked_pieces_select macro, macros/staging/stg_selects.sql: incremental models narrow it to their groups under FINAL.)
{{ stg_linked_pieces_select() }}
