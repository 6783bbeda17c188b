{{ config(
    materialized='incremental',
    incremental_strategy='delete+insert',
    on_schema_change='fail',
    unique_key='upload_group',
    engine='MergeTree()',
    order_by='(upload_group, upload_key)',
    post_hook=["{{ insert_remaining_passes(upload_payloads_select, 'int_changed_upload_groups') }}",
               "{{ delete_unbuilt_changed_groups('upload_group', 'int_changed_upload_groups') }}"]
) }}
-- depends_on: {{ ref('int_changed_upload_groups') }}
-- depends_on: {{ ref('session_completeness') }}
-- depends_on: {{ ref('int_session_chunks') }}
-- The reconstructed bytes of every complete upload, one row per upload of any status (payload
-- columns empty unless complete) so that source_ingested_at is a watermark over everything seen.
-- joined bytes: the chosen chunks' payloads concatenated in index order (groupArray + arraySort);
-- for a linked list the index is the walk order from "Genesis".
-- file bytes: the joined text after the IQ gateway's rule (docs/protocol.md §5): decode_rule says
-- which of data_url / base64 / text applied.
-- verification / verification_reason: copied from session_completeness (the G1 Merkle check).
-- Incremental: whole upload groups whose completeness row changed since the previous build
-- (int_changed_upload_groups, listed before the first pass) are recomputed and replaced
-- (delete+insert on upload_group). A full refresh is the same SQL over every group.
-- Passes: the groups are built in int_changed_upload_groups.passes INSERTs of about
-- iq_payload_bytes_per_pass chunk bytes (pass 0 here, the others by the post-hook
-- insert_remaining_passes; the old rows of those groups go in the next hook): one INSERT joining
-- every complete upload's chunks at 10M raw rows stopped at the 4G cap (docs/transform-scale.md).
-- The SQL is the macro upload_payloads_select (macros/upload_payloads_select.sql).
{{ upload_payloads_select(0) }}
