-- G3 create_session instructions: the session PDA and the user's sequence number.
-- (The query is the stg_session_creations_select macro, macros/staging/stg_selects.sql: incremental models narrow it to their groups under FINAL.)
{{ stg_session_creations_select() }}
