{#- int_session_chunks' SELECT for some of its shapes (`shapes`: any of 'session', 'inline',
    'linked'): the model's header (models/intermediate/int_session_chunks.sql) says what it holds.
    An incremental build runs all three in one INSERT; a full refresh one INSERT per shape (the model
    the sessions, its post-hook insert_chunk_shapes the others): one INSERT of all three at 10M raw
    rows peaked at 4.8 GB, since a UNION ALL runs its branches at once (2.6 GB and 2.7 GB alone). -#}
{% macro int_session_chunks_select(shapes) -%}
with
{% if incremental_build() %}
changed_groups as (
    select session_account as upload_group
    from {{ source('iq', 'raw_instructions') }}
    where ingested_at > {{ previous_watermark() }}
      and kind = 'chunk'
    union distinct
    select signature
    from {{ source('iq', 'raw_instructions') }}
    where ingested_at > {{ previous_watermark() }}
      and generation = 'g3' and instruction in {{ g3_code_in_instructions() }} and on_chain_path = ''
    union distinct
    select upload_key
    from {{ ref('int_linked_walks') }}
    where ingested_at > {{ previous_watermark() }}
),
{% endif %}

session_chunk_copies as (
    {% if incremental_build() %}
    -- stg_chunks narrowed to the changed groups before FINAL (see stg_chunks_select)
    {{ stg_chunks_select("session_account in (select upload_group from changed_groups)") }}
    {% else %}
    select * from {{ ref('stg_chunks') }}
    {% endif %}
),

session_chunks as (
    select
        upload_key,
        any(upload_group) as upload_group,
        'session' as upload_shape,
        chunk_index,
        argMinIf(payload, {{ chain_order() }}, not tx_failed) as chosen_payload,
        argMinIf(method, {{ chain_order() }}, not tx_failed) as chosen_method,
        argMinIf(slot, {{ chain_order() }}, not tx_failed) as chosen_slot,
        argMinIf(signature, {{ chain_order() }}, not tx_failed) as chosen_signature,
        toUInt32(countIf(not tx_failed)) as copies_seen,
        toUInt32(countIf(tx_failed)) as failed_copies,
        toUInt32(uniqExactIf(sipHash128(payload), not tx_failed)) as distinct_payloads,
        minIf(slot, tx_failed) as first_failed_slot,
        max(ingested_at) as source_ingested_at
    from session_chunk_copies
    group by upload_key, chunk_index
),

inline_uploads as (
    {% if incremental_build() %}
    -- narrowed to the changed groups before FINAL (stg_inline_uploads_select)
    select * from ({{ stg_inline_uploads_select("signature in (select upload_group from changed_groups)") }})
    {% else %}
    select * from {{ ref('stg_inline_uploads') }}
    {% endif %}
),

inline_chunks as (
    select
        upload_key,
        any(upload_group) as upload_group,
        'inline' as upload_shape,
        toUInt32(0) as chunk_index,
        argMinIf(payload, {{ chain_order() }}, not tx_failed) as chosen_payload,
        CAST(NULL AS Nullable(UInt8)) as chosen_method,
        argMinIf(slot, {{ chain_order() }}, not tx_failed) as chosen_slot,
        argMinIf(signature, {{ chain_order() }}, not tx_failed) as chosen_signature,
        toUInt32(countIf(not tx_failed)) as copies_seen,
        toUInt32(countIf(tx_failed)) as failed_copies,
        toUInt32(uniqExactIf(sipHash128(payload), not tx_failed)) as distinct_payloads,
        minIf(slot, tx_failed) as first_failed_slot,
        max(ingested_at) as source_ingested_at
    from inline_uploads
    group by upload_key
),

walks_to_build as (
    select upload_key, depth, piece_signature
    from {{ ref('int_linked_walks') }}
    {% if incremental_build() %}where upload_key in (select upload_group from changed_groups){% endif %}
),

linked_piece_rows as (
    -- the bytes of the pieces of those walks only (int_linked_pieces carries no payload)
    {% if incremental_build() %}
    {{ raw_instructions_final("kind = 'linked_piece' and signature in (select piece_signature from walks_to_build)") }}
    {% else %}
    select * from {{ ref('stg_linked_pieces') }}
    {% endif %}
),

piece_payloads as (
    -- a transaction with several send_code pieces contributes them in instruction order
    select
        signature,
        arrayStringConcat(arrayMap(p -> p.2, arraySort(p -> p.1, groupArray(((ix_index, inner_index), payload))))) as piece_payload,
        argMin(method, (ix_index, inner_index)) as piece_method,
        min(slot) as piece_slot,
        max(ingested_at) as piece_ingested_at
    from linked_piece_rows
    where not tx_failed
    group by signature
),

walk_lengths as (
    -- the deepest piece of each walk, from the walks alone (no bytes): a window over the joined
    -- payload rows buffered them all (2.7 GB for 1M pieces at 10M raw rows)
    select upload_key, max(depth) as max_depth
    from walks_to_build
    group by upload_key
),

walk_steps as (
    select w.upload_key as upload_key, w.depth as depth, l.max_depth as max_depth, w.piece_signature as piece_signature
    from walks_to_build as w
    inner join walk_lengths as l on l.upload_key = w.upload_key
),

walked_pieces as (
    select
        s.upload_key as upload_key,
        s.depth as depth,
        s.max_depth as max_depth,
        p.piece_payload as payload,
        p.piece_method as method,
        p.piece_slot as slot,
        p.signature as signature,
        p.piece_ingested_at as ingested_at
    -- the payloads on the left (streamed), the walk steps (no bytes) as the join's hash table
    from piece_payloads as p
    inner join walk_steps as s on s.piece_signature = p.signature
),

linked_chunks as (
    select
        upload_key,
        upload_key as upload_group,
        'linked_list' as upload_shape,
        toUInt32(max_depth - depth) as chunk_index,
        payload as chosen_payload,
        method as chosen_method,
        slot as chosen_slot,
        signature as chosen_signature,
        toUInt32(1) as copies_seen,
        toUInt32(0) as failed_copies,
        toUInt32(1) as distinct_payloads,
        toUInt64(0) as first_failed_slot,
        ingested_at as source_ingested_at
    from walked_pieces
),

all_chunks as (
    {%- for shape in shapes %}
    {% if not loop.first %}union all{% endif %}
    select * from {{ shape }}_chunks
    {%- endfor %}
)

select
    upload_key,
    upload_group,
    upload_shape,
    chunk_index,
    chosen_payload as payload,
    chosen_method as method,
    chosen_slot,
    chosen_signature,
    copies_seen,
    failed_copies,
    distinct_payloads,
    first_failed_slot,
    source_ingested_at,
    -- the dbt invocation that wrote the row (tests of an incremental build check this build's rows)
    '{{ invocation_id }}' as build_id
from all_chunks
{%- endmacro %}

{#- The shapes the model's own INSERT writes, comma-separated: all three on an incremental build, the
    sessions on a full refresh (the post-hook adds the others). A macro so unit tests can name one. -#}
{% macro int_session_chunks_model_shapes() -%}
{{ return('session,inline,linked' if incremental_build() else 'session') }}
{%- endmacro %}

{#- Post-hook of int_session_chunks: on a full refresh, the inline and linked-list chunks, each its
    own INSERT after the session chunks the model wrote. A full refresh stopped between two is
    rebuilt whole by the next build (transform/build_state.py, the `started` record). -#}
{% macro insert_chunk_shapes() -%}
{%- if execute and not incremental_build() -%}
    {%- for shape in ['inline', 'linked'] -%}
        {%- do run_query("insert into " ~ this ~ " " ~ int_session_chunks_select([shape])) -%}
    {%- endfor -%}
{%- endif -%}
{#- nothing left to send: dbt skips a hook that renders empty -#}
{%- endmacro %}
