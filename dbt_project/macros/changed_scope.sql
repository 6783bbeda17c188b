{#- Data tests of an incremental build check the groups that build recomputed; a full refresh
    (`--full-refresh`) and a full-test run (`iq-etl transform --full-tests`, the nightly deployment)
    check everything. The runner passes var iq_test_scope = 'changed' for a plain incremental build.
    "Recomputed" = rows whose build_id is this dbt invocation (the four incremental models), and
    for the views over them the uploads of this build's session_completeness rows. dbt_project/README.md, "Tests". -#}

{% macro tests_scoped() -%}
{{ return(var('iq_test_scope', 'all') == 'changed' and not flags.FULL_REFRESH) }}
{%- endmacro %}

{#- The uploads this build recomputed (a subquery), for the scoped tests. -#}
{% macro changed_uploads() -%}
(select upload_key from {{ ref('session_completeness') }} where build_id = '{{ invocation_id }}')
{%- endmacro %}

{#- `and <column> in (the uploads this build recomputed)` on a scoped run, else nothing: for the
    singular tests (tests/*.sql). -#}
{% macro and_changed_upload(column) -%}
{%- if tests_scoped() %} and {{ column }} in {{ changed_uploads() }}{% endif -%}
{%- endmacro %}

{#- dbt's `where` hook for generic tests: the test reads `relation` through this. On a scoped run
    the incremental models and the marts over them are narrowed to this build's rows; any `where`
    config of the test still applies. -#}
{% macro clickhouse__get_where_subquery(relation) -%}
    {%- set where = config.get('where', '') -%}
    {%- set scope = none -%}
    {%- if tests_scoped() -%}
        {%- set name = relation.identifier -%}
        {%- set changed = "(select upload_key from " ~ relation.schema ~ ".session_completeness where build_id = '" ~ invocation_id ~ "')" -%}
        {%- if name in ('int_uploads', 'session_completeness', 'int_session_chunks', 'upload_payloads') -%}
            {%- set scope = "build_id = '" ~ invocation_id ~ "'" -%}
        {%- elif name in ('session_payloads', 'sessions_ready_to_export', 'chunk_coverage') -%}
            {%- set scope = "upload_key in " ~ changed -%}
        {%- endif -%}
    {%- endif -%}
    {%- set conditions = [] -%}
    {%- if scope %}{% do conditions.append('(' ~ scope ~ ')') %}{% endif -%}
    {%- if where %}{% do conditions.append('(' ~ where ~ ')') %}{% endif -%}
    {%- if conditions -%}
        {%- set filtered -%}
            (select * from {{ relation }} where {{ conditions | join(' and ') }}) dbt_subquery
        {%- endset -%}
        {%- do return(filtered) -%}
    {%- else -%}
        {%- do return(relation) -%}
    {%- endif -%}
{%- endmacro %}
