{#- Every model lives in database `iq` (the target schema). A custom schema names the database
    outright instead of dbt's default `<target>_<custom>` prefixing. -#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- if custom_schema_name is none -%}{{ target.schema }}{%- else -%}{{ custom_schema_name | trim }}{%- endif -%}
{%- endmacro %}
