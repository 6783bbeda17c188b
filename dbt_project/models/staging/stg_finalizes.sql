-- Instructions that close a session upload and may declare its total:
--   G2 finalize / finalize_hybrid_session (session id given) and finalize_bundle (no session id:
--   is_bundle, attached to an upload by int_finalizes), and
--   G3 code-in finalisers whose on_chain_path is short (a session PDA): the session is the
--   instruction's session account (accounts[4]), else the on_chain_path; SessionFinalize carries
--   the declared total and metadata JSON may repeat it as total_chunks.
-- (The query is the stg_finalizes_select macro, macros/staging/stg_selects.sql: incremental models narrow it to their groups under FINAL.)
{{ stg_finalizes_select() }}
