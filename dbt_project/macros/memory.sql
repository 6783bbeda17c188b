{#- Embedded chDB shares its process with dbt, and the allocator keeps the pages a finished query
    freed: after int_session_chunks the 3M-row full build sat at 1.9 GB RSS before int_uploads
    started (bench 4b). A post-hook of every model hands them back to the system on the embedded
    target (SYSTEM JEMALLOC PURGE: 834 -> 265 MB after a big group-by, measured). A remote server
    manages its own memory, and the statement needs a privilege there: nothing is run. -#}
{% macro release_memory() -%}
{%- if target.name == 'embedded' -%}
system jemalloc purge
{%- else -%}
select 1
{%- endif -%}
{%- endmacro %}
