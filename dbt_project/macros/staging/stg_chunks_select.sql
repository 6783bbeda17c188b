{#- A staging model body kept in a macro: stg_chunks is this query unfiltered, and the
    incremental models (int_session_chunks, int_uploads) call it with a filter on the session
    accounts they rebuild, so the filter lands as a PREWHERE under FINAL (raw_instructions_final)
    instead of a WHERE over the whole stg_chunks view: measured ~5x faster on 2.2 M rows
    (dbt_project/README.md, ClickHouse 26 / chDB notes). -#}

{#- stg_chunks' query, optionally narrowed before FINAL by `session_filter` (a condition on
    session_account): incremental models use it to read only the chunks of the groups they
    rebuild (PREWHERE under FINAL: 5x faster than filtering the view, measured on 2.2 M rows). -#}
{% macro stg_chunks_select(session_filter=none, relation=none) -%}
with chunk_instructions as (
    {{ raw_instructions_final("kind = 'chunk'" ~ (" and (" ~ session_filter ~ ")" if session_filter else ""), relation) }}
)

select
    {{ session_upload_key('generation', 'session_account', 'session_id') }} as upload_key,
    session_account as upload_group,
    generation,
    program_id,
    instruction,
    session_account,
    session_id,
    assumeNotNull(chunk_index) as chunk_index,
    method,
    payload,
    slot,
    signature,
    tx_index,
    ix_index,
    inner_index,
    tx_failed,
    tx_status,
    ingested_at
from chunk_instructions
where chunk_index is not null
{%- endmacro %}
