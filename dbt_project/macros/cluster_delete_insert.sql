{#- delete+insert that is safe on replicas (docs/DECISIONS.md, "Incremental models on a cluster").

    dbt-clickhouse's delete+insert builds the new rows into a staging table, deletes the target's rows
    whose unique_key is in the staging table, and inserts the staging rows. On Replicated* tables ON
    CLUSTER two things go wrong:
    - dbt-clickhouse #740: the lightweight DELETE ... WHERE key IN (SELECT key FROM staging) is a
      replicated mutation that every replica executes against its OWN copy of the staging table; a
      replica that has not fetched the staging parts yet deletes nothing, and the insert then
      duplicates every key it kept. Fix: `SYSTEM SYNC REPLICA <staging> ON CLUSTER` before the delete,
      so every replica holds all of the staging rows when the mutation reaches it.
    - dbt-clickhouse #213: re-inserting a block identical to one inserted before (a group recomputed to
      the same rows) is dropped by replicated insert deduplication, after its old rows were deleted:
      rows vanish. Fix: the insert runs with insert_deduplicate = 0 (profiles.yml sets it for every dbt
      query too; the ingest's own inserts keep deduplication, they rely on it).
    Without a cluster the adapter's own macro runs unchanged. -#}

{% macro clickhouse__incremental_delete_insert(existing_relation, unique_key, incremental_predicates, is_distributed=False) %}
  {%- set cluster = adapter.get_clickhouse_cluster_name() -%}
  {%- if cluster is none or is_distributed -%}
    {{ dbt.clickhouse__incremental_delete_insert(existing_relation, unique_key, incremental_predicates, is_distributed) }}
  {%- else -%}
    {%- set new_data_relation = existing_relation.incorporate(path={"identifier": existing_relation.identifier
        + '__dbt_new_data_' + invocation_id.replace('-', '_')}) -%}
    {{ drop_relation_if_exists(new_data_relation) }}
    {% call statement('main') %}
      {{ get_create_table_as_sql(False, new_data_relation, sql) }}
    {% endcall %}
    {%- set dest_columns = adapter.get_columns_in_relation(existing_relation) -%}
    {%- for step in iq_cluster_delete_insert_steps(existing_relation, new_data_relation, unique_key, cluster,
                                                   dest_columns | map(attribute='quoted') | join(', '),
                                                   incremental_predicates) -%}
      {% call statement('iq_cluster_delete_insert_' ~ loop.index) %}{{ step }}{% endcall %}
    {%- endfor -%}
    {% do adapter.drop_relation(new_data_relation) %}
  {%- endif -%}
{% endmacro %}

{#- The statements after the staging table exists, in order (also rendered by the preview below). -#}
{% macro iq_cluster_delete_insert_steps(existing_relation, staging, unique_key, cluster, columns, incremental_predicates=none) %}
  {%- set predicates = (incremental_predicates or []) | map('string') | list -%}
  {%- set steps = [
      'system sync replica ' ~ staging ~ ' on cluster "' ~ cluster ~ '"',
      'delete from ' ~ existing_relation ~ ' on cluster "' ~ cluster ~ '" where (' ~ unique_key ~ ') in (select '
        ~ unique_key ~ ' from ' ~ staging ~ ')' ~ ((' and ' ~ (predicates | join(' and '))) if predicates else '')
        ~ ' settings lightweight_deletes_sync = 2, mutations_sync = 2',
      'insert into ' ~ existing_relation ~ ' select ' ~ columns ~ ' from ' ~ staging ~ ' settings insert_deduplicate = 0',
  ] -%}
  {{ return(steps) }}
{% endmacro %}

{#- `dbt run-operation iq_cluster_delete_insert_preview`: the statements a cluster delete+insert issues
    for each incremental model, executing nothing (tests/integration/test_dbt_cluster_ddl.py). -#}
{% macro iq_cluster_delete_insert_preview(cluster='iq_test_cluster') %}
  {%- set lines = [] -%}
  {%- for node in graph.nodes.values() | sort(attribute='name') -%}
    {%- if node.resource_type == 'model' and node.config.materialized == 'incremental'
          and node.config.get('incremental_strategy') == 'delete+insert' -%}
      {%- set target_relation = api.Relation.create(schema=node.schema, identifier=node.alias) -%}
      {%- set staging = api.Relation.create(schema=node.schema, identifier=node.alias ~ '__dbt_new_data_preview') -%}
      {%- for step in iq_cluster_delete_insert_steps(target_relation, staging, node.config.get('unique_key'), cluster, '*') -%}
        {%- do lines.append(node.name ~ ': ' ~ step) -%}
      {%- endfor -%}
    {%- endif -%}
  {%- endfor -%}
  {{ log('IQ-DI ' ~ (lines | join('\nIQ-DI ')), info=True) }}
  {{ return(lines) }}
{% endmacro %}
