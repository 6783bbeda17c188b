{#- Post-hook of every model (dbt_project.yml): on the embedded target, `SYSTEM JEMALLOC PURGE`. The
    allocator keeps the pages a query freed, so the one process of an embedded build grew model by
    model (at 10M raw rows: 0.4 GB before the first model, 3.2 GB after int_session_chunks, of which
    the purge returns 1.2 GB), and each query's own memory came on top of that. A remote server
    manages its own memory (and the transform user may not hold the SYSTEM privilege): nothing (a hook
    that renders empty is not sent). -#}
{% macro release_memory() -%}
{%- if target.name == 'embedded' -%}
system jemalloc purge
{%- endif -%}
{%- endmacro %}
