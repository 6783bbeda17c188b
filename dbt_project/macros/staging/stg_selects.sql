{#- The bodies of the staging views over iq.raw_instructions other than stg_chunks (its own file),
    kept in macros for one reason: an incremental model that reads a few groups passes `raw_filter`
    (a condition on raw columns: session_account, signature, on_chain_path, tail_tx), which becomes
    part of the PREWHERE under FINAL (raw_instructions_final). The same filter written as a WHERE
    over the view is applied after FINAL has merged every row of that kind in the warehouse
    (dbt_project/README.md, "ClickHouse 26 / chDB notes"). The views call these macros with no
    filter, so a view and an incremental model's narrowed read are the same query. Filtering before
    the merge is safe: the copies of one key are re-ingests of one instruction and agree on every
    column these filters name. -#}

{% macro staging_prewhere(base, raw_filter) -%}
{{ base }}{% if raw_filter %} and ({{ raw_filter }}){% endif %}
{%- endmacro %}

{#- stg_finalizes: G2 finalize / finalize_bundle and G3 session code-ins. -#}
{% macro stg_finalizes_select(raw_filter=none, relation=none) -%}
with g2_finalizes as (
    select
        *,
        session_account as session_key_account,
        session_id = '' as is_bundle
    from ({{ raw_instructions_final(staging_prewhere("kind = 'finalize' and startsWith(generation, 'g2')", raw_filter), relation) }})
),

g3_session_code_ins as (
    select
        *,
        -- the account the program finalised (accounts[4], as the decoder reports it) wins over
        -- on_chain_path: the program checks the account, nobody checks the path text
        if(session_account != '', session_account, on_chain_path) as session_key_account,
        false as is_bundle
    from ({{ raw_instructions_final(staging_prewhere("generation = 'g3' and instruction in " ~ g3_code_in_instructions(), raw_filter), relation) }})
    where on_chain_path != ''
      and length(on_chain_path) < {{ linked_tail_min_length() }}
),

finalize_instructions as (
    select * from g2_finalizes
    union all
    select * from g3_session_code_ins
)

select
    if(is_bundle, '', {{ session_upload_key('generation', 'session_key_account', 'session_id') }}) as upload_key,
    session_key_account as upload_group,
    generation,
    program_id,
    instruction,
    session_key_account as session_account,
    session_id,
    is_bundle,
    total_chunks as declared_total,
    {{ metadata_uint32('metadata', 'total_chunks') }} as metadata_total,
    merkle_root,
    metadata,
    seq,
    slot,
    signature,
    tx_index,
    ix_index,
    inner_index,
    tx_failed,
    ingested_at
from finalize_instructions
{%- endmacro %}

{#- stg_session_creations: G3 create_session (the session PDA and the user's sequence number). -#}
{% macro stg_session_creations_select(raw_filter=none, relation=none) -%}
select
    session_account as upload_key,
    session_account,
    generation,
    program_id,
    seq,
    slot,
    signature,
    tx_index,
    ix_index,
    inner_index,
    tx_failed,
    ingested_at
from ({{ raw_instructions_final(staging_prewhere("kind = 'create_session'", raw_filter), relation) }})
{%- endmacro %}

{#- stg_inline_uploads: G3 code-ins with an empty on_chain_path, keyed by their signature. -#}
{% macro stg_inline_uploads_select(raw_filter=none, relation=none) -%}
select
    signature as upload_key,
    signature as upload_group,
    generation,
    program_id,
    instruction,
    payload,
    metadata,
    {{ metadata_uint32('metadata', 'total_chunks') }} as metadata_total,
    slot,
    signature,
    tx_index,
    ix_index,
    inner_index,
    tx_failed,
    ingested_at
from ({{ raw_instructions_final(staging_prewhere("generation = 'g3' and instruction in " ~ g3_code_in_instructions(), raw_filter), relation) }})
where on_chain_path = ''
{%- endmacro %}

{#- stg_linked_indexes: what names a linked list's tail (G1 db_code_in tail_tx, G3 code-in
    on_chain_path of 80+ characters). -#}
{% macro stg_linked_indexes_select(raw_filter=none, relation=none) -%}
with g1_indexes as (
    select *, tail_tx as tail_signature
    from ({{ raw_instructions_final(staging_prewhere("kind = 'linked_index' and generation = 'g1'", raw_filter), relation) }})
),

g3_linked_code_ins as (
    select *, on_chain_path as tail_signature
    from ({{ raw_instructions_final(staging_prewhere("generation = 'g3' and instruction in " ~ g3_code_in_instructions(), raw_filter), relation) }})
    where length(on_chain_path) >= {{ linked_tail_min_length() }}
),

index_instructions as (
    select * from g1_indexes
    union all
    select * from g3_linked_code_ins
)

select
    tail_signature,
    generation,
    program_id,
    instruction,
    metadata,
    {{ metadata_uint32('metadata', 'total_chunks') }} as metadata_total,
    handle,
    type_field,
    offset,
    slot,
    signature,
    tx_index,
    ix_index,
    inner_index,
    tx_failed,
    ingested_at
from index_instructions
where tail_signature != ''
{%- endmacro %}

{#- stg_linked_pieces: G1 / G3 send_code pieces with their before_tx link. -#}
{% macro stg_linked_pieces_select(raw_filter=none, relation=none) -%}
select
    signature,
    before_tx,
    payload,
    method,
    generation,
    program_id,
    slot,
    tx_index,
    ix_index,
    inner_index,
    tx_failed,
    ingested_at
from ({{ raw_instructions_final(staging_prewhere("kind = 'linked_piece'", raw_filter), relation) }})
{%- endmacro %}
