-- Instructions that name a linked list's tail (its last piece's signature): G1 db_code_in
-- (tail_tx; handle, type_field and offset - a Merkle root - ride along) and G3 code-in finalisers
-- whose on_chain_path is a signature (80+ characters).
-- (The query is the stg_linked_indexes_select macro, macros/staging/stg_selects.sql: incremental models narrow it to their groups under FINAL.)
{{ stg_linked_indexes_select() }}
