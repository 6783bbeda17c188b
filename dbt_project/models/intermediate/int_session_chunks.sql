{{ config(
    materialized='incremental',
    incremental_strategy='delete+insert',
    on_schema_change='fail',
    unique_key='upload_group',
    engine='MergeTree()',
    order_by='(upload_group, upload_key, chunk_index)',
    post_hook=["{{ insert_chunk_shapes() }}"]
) }}
-- One row per (upload, chunk index) ever seen, for every upload shape:
--   sessions (G2, G3): the chosen copy is the earliest successful one in chain order
--     (slot, tx_index, ix_index, inner_index: macro chain_order); copies_seen counts successful
--     copies, failed_copies the failed ones; distinct_payloads > 1 means copies disagree (a conflict).
--     An index seen only in failed transactions has copies_seen = 0 (not present).
--   inline G3 uploads: one chunk, index 0, the payload from metadata.data.
--   linked lists: one chunk per piece reached by the before_tx walk, indexed from the lowest
--     piece reached (0 = the piece after Genesis when the walk is complete).
-- Incremental: a build recomputes whole upload groups (session account, inline signature, or
-- list tail) that have rows ingested since the previous build, and replaces them (delete+insert
-- on upload_group), so re-keyed or re-chosen rows never linger inside a group.
-- A full refresh writes the shapes in three INSERTs (sessions here, inline and linked lists by the
-- post-hook insert_chunk_shapes): one INSERT of all three peaked at 4.8 GB at 10M raw rows. The SQL
-- is the macro int_session_chunks_select (macros/int_session_chunks_select.sql).
-- depends_on: {{ ref('int_linked_walks') }}
-- depends_on: {{ ref('stg_chunks') }}
-- depends_on: {{ ref('stg_inline_uploads') }}
-- depends_on: {{ ref('stg_linked_pieces') }}
{{ int_session_chunks_select(int_session_chunks_model_shapes().split(',')) }}
