{{ config(
    materialized='incremental',
    incremental_strategy='delete+insert',
    on_schema_change='fail',
    unique_key='refresh_group',
    engine='MergeTree()',
    order_by='(refresh_group, upload_key)',
    post_hook=["{{ insert_remaining_passes(int_uploads_select) }}", "{{ delete_unbuilt_changed_groups() }}"]
) }}
-- depends_on: {{ ref('int_changed_groups') }}
-- depends_on: {{ ref('int_changed_walks') }}
-- depends_on: {{ ref('int_changed_raw') }}
-- One row per upload, whatever its shape (keys: dbt_project/README.md, Rules, "Upload keys"):
--   session      G2 `<account>:<session id>`, G3 the session PDA: from chunks, finalizes
--                (int_finalizes, bundles attached) and G3 create_session;
--   linked_list  the tail signature: every list an index names, plus lists without an index
--                whose pieces no indexed list uses (so a stray duplicate piece of an indexed list
--                does not become an upload of its own);
--   inline       the G3 code-in's signature.
-- expected_total comes from the earliest successful finalize's declared total (G2 finalize,
-- G3 SessionFinalize), else the metadata's total_chunks; total_disagreement is set when the
-- successful finalizes and the metadata do not all declare the same total.
-- Failed rows never define a total or a slot; they are counted.
-- Incremental (delete+insert on refresh_group): a build recomputes the refresh groups listed in
-- int_changed_groups (session account, inline signature, or a linked list's root: all lists
-- sharing pieces), so an upload key that stops existing inside a group (a bundle moving to
-- another session, a list tail that a later piece extends) is removed with it; a changed group
-- with no upload left is deleted by the post-hook (delete_unbuilt_changed_groups). It reads those
-- groups' raw rows from int_changed_raw (FINAL applied once per build) and their walks from
-- int_changed_walks: a CTE is re-run at every use, so nothing here re-reads a warehouse-sized table.
-- A full refresh is the same SQL over every group (int_changed_groups lists them all then, and
-- int_changed_raw / int_changed_walks hold every row and walk).
-- Passes: the groups are built in int_changed_groups.passes INSERTs (about iq_rows_per_pass raw
-- rows each; pass 0 here, the others by the post-hook insert_remaining_passes), so the
-- memory a build needs is that of a pass: one INSERT over 10M raw rows stopped at the 4G cap
-- (docs/transform-scale.md). The SQL is the macro int_uploads_select (macros/int_uploads_select.sql).
-- depends_on: {{ ref('int_linked_pieces') }}
{{ int_uploads_select(0) }}
