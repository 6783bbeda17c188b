{{ config(materialized='table', engine='MergeTree()', order_by='(pass, upload_key, depth)') }}
-- depends_on: {{ ref('int_changed_groups') }}
-- The int_linked_walks rows of the linked lists this build recomputes (refresh groups `list:<root>`
-- in int_changed_groups), built once per run, with the pass of int_uploads that builds them
-- (int_changed_groups.pass). int_uploads reads these walks in several places; a ClickHouse CTE is
-- re-run at every use, so a CTE over int_linked_walks scanned the whole walk table some hundred
-- times per incremental build (10.5 M rows read for 30 k walk rows, measured).
-- A full refresh recomputes every group: every walk, without the group filter.
{%- set incremental = incremental_build() %}
select *, toUInt32(cityHash64({{ linked_group('root_signature') }}) % {{ changed_passes() }}) as pass
from {{ ref('int_linked_walks') }}
{% if incremental %}
where {{ linked_group('root_signature') }} in (select refresh_group from {{ ref('int_changed_groups') }})
{% endif %}
