{{ config(
    materialized='incremental',
    incremental_strategy='delete+insert',
    on_schema_change='fail',
    unique_key='refresh_group',
    engine='MergeTree()',
    order_by='(refresh_group, upload_key)',
    post_hook=["{{ insert_remaining_passes(session_completeness_select) }}", "{{ delete_unbuilt_changed_groups() }}"]
) }}
-- depends_on: {{ ref('int_changed_groups') }}
-- One row per upload: is it complete, and if not, what is missing and where to look.
-- Status, the first rule that applies (the order the development chain's manifest uses too;
-- dbt_project/README.md explains each):
--   total_mismatch      finalizes/metadata declare different totals, chunks exist at or beyond the
--                       declared total, the declared total is 0, a finalized session declares no
--                       total at all, or a complete linked list's length differs from its
--                       metadata total_chunks
--   conflicting_chunks  some chunk index has successful copies with different bytes
--   missing_chunks      a linked list's walk stops before "Genesis" (a before_tx not found), or an
--                       index below the declared total (below the highest index seen, when no
--                       finalize yet) has no successful copy
--   awaiting_finalize   no successful finalize / index / code-in seen yet, no gap (normal in flight)
--   complete            otherwise: every index in [0, total) present, all copies of each identical
-- Verification (docs/protocol.md, "Verification"): 'verified' / 'mismatch' when the upload's bytes
-- can be checked against what the chain commits to (a complete G1 list: the Merkle root of its
-- pieces against db_code_in offset), else 'unverifiable'; verification_reason says why. Export
-- never sends a 'mismatch'.
-- Incremental (delete+insert on refresh_group, as int_uploads): only this build's changed refresh
-- groups (int_changed_groups) are recomputed; a changed group with no upload left is deleted by
-- the post-hook. A full refresh is the same SQL over every group. Built in int_changed_groups'
-- passes as int_uploads is (pass 0 here, the others by the post-hook insert_remaining_passes): one
-- INSERT over 10M raw rows stopped at the 4G cap. The SQL is the macro session_completeness_select.
-- depends_on: {{ ref('int_uploads') }}
-- depends_on: {{ ref('int_session_chunks') }}
{{ session_completeness_select(0) }}
