-- G3 code-in finalisers with an empty on_chain_path: the whole file is inline in metadata.data
-- (the decoder puts it in payload). The upload is keyed by the code-in's signature.
-- (The query is the stg_inline_uploads_select macro, macros/staging/stg_selects.sql: incremental models narrow it to their groups under FINAL.)
{{ stg_inline_uploads_select() }}
