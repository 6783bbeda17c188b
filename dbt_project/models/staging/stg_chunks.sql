-- Session chunks (G2 Pinocchio and legacy, G3 post_chunk), one row per copy seen on chain, with
-- the upload they belong to. Copies are not merged here: int_session_chunks chooses among them.
-- (The query is the stg_chunks_select macro, which incremental models narrow to their groups.)
{{ stg_chunks_select() }}
