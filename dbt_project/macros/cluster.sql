{#- Cluster-ready tables (docs/SCALING.md, "One ClickHouse, several replicas").

    With IQ_CLICKHOUSE_CLUSTER set, `iq-etl transform` gives the `remote` target dbt-clickhouse's `cluster`
    setting (profiles.yml): dbt-clickhouse then adds `ON CLUSTER "<name>"` to the DDL of every model
    (create, exchange, drop, alter). The engine is the model's own (`engine=` in its config, else
    MergeTree()); on a cluster a plain MergeTree table would exist on every replica but hold rows only on
    the one that ran the insert, so `engine_clause` below -- dbt-clickhouse's macro of that name, which
    a project macro overrides -- turns each *MergeTree engine into its Replicated* form. Without arguments
    a Replicated engine takes the server's `default_replica_path` / `default_replica_name`
    ('/clickhouse/tables/{uuid}/{shard}', '{replica}'), which `ON CLUSTER` DDL in an Atomic database
    fills in the same on every replica. Engines that do not replicate (Join, Memory) are kept: they only
    serve the build that fills them, on the replica that runs it. Without a cluster nothing changes. -#}

{% macro iq_cluster_engine(engine) -%}
  {%- set engine = (engine or 'MergeTree()') | trim -%}
  {%- if adapter.get_clickhouse_cluster_name() is none -%}
    {{ engine }}
  {%- elif engine.startswith('Replicated') or 'MergeTree' not in engine -%}
    {{ engine }}
  {%- else -%}
    Replicated{{ engine }}
  {%- endif -%}
{%- endmacro %}

{% macro engine_clause() %}
  engine = {{ iq_cluster_engine(config.get('engine', default='MergeTree()')) }}
{%- endmacro -%}

{#- `dbt run-operation iq_cluster_ddl_preview`: the DDL head (create table ... ON CLUSTER ... engine)
    each table and incremental model gets on the configured target, without running anything. For
    reviewing a cluster set-up before the first build (tests/integration/test_dbt_cluster_ddl.py). -#}
{% macro iq_cluster_ddl_preview() %}
  {%- set lines = [] -%}
  {%- for node in graph.nodes.values() | sort(attribute='name') -%}
    {%- if node.resource_type == 'model' and node.config.materialized in ('table', 'incremental') -%}
      {%- set relation = api.Relation.create(schema=node.schema, identifier=node.alias,
                                             can_on_cluster=(adapter.get_clickhouse_cluster_name() is not none)) -%}
      {%- do lines.append(node.name ~ ': create table ' ~ relation ~ ' ' ~ (on_cluster_clause(relation) | trim)
                          ~ ' engine = ' ~ iq_cluster_engine(node.config.get('engine'))) -%}
    {%- endif -%}
  {%- endfor -%}
  {%- do lines.append('default: ' ~ (engine_clause() | trim)) -%}
  {{ log('IQ-DDL ' ~ (lines | join('\nIQ-DDL ')), info=True) }}
  {{ return(lines) }}
{% endmacro %}
