{#- int_finalizes' body: every finalize with its upload_key resolved (the model's header says how
    a G2-legacy finalize_bundle is attached). In a macro so that int_uploads' incremental build can
    pass `groups` (a subquery of refresh groups): its finalizes and the G2 chunks that attach
    bundles are then read for those session accounts only, under FINAL (stg_finalizes_select,
    stg_chunks_select), not merged for the whole warehouse first. `relation` alone (int_uploads'
    full refresh): every finalize, read from that table of deduplicated raw rows (int_changed_raw)
    instead of FINAL. Without either (the view, unit tests) it reads the staging views. -#}
{#- `raw_filter`: a condition on the raw rows ANDed to both reads (int_uploads: its pass). -#}
{% macro int_finalizes_select(groups=none, relation=none, raw_filter=none) -%}
with
{% if groups or relation %}
finalizes as (
    -- a G3 code-in's group is its session account, else its on_chain_path: both are candidates
    -- before FINAL, the exact group after
    select * from ({{ stg_finalizes_select(and_filters(("session_account in " ~ groups ~ " or on_chain_path in " ~ groups) if groups else none, raw_filter), relation) }})
    {% if groups %}where upload_group in {{ groups }}{% endif %}
),

g2_chunks as (
    select * from ({{ stg_chunks_select(and_filters(("session_account in " ~ groups) if groups else none, raw_filter), relation) }})
),
{% else %}
finalizes as (
    select * from {{ ref('stg_finalizes') }}
),

g2_chunks as (
    select * from {{ ref('stg_chunks') }}
),
{% endif %}

session_finalizes as (
    select *
    from finalizes
    where not is_bundle
),

bundles as (
    select *
    from finalizes
    where is_bundle
),

g2_session_activity as (
    -- the newest session id seen on each G2 account in each slot
    select
        session_account,
        slot,
        argMax(session_id, (tx_index, ix_index, inner_index)) as latest_session_id
    from (
        select session_account, slot, session_id, tx_index, ix_index, inner_index
        from g2_chunks
        where startsWith(generation, 'g2')
        union all
        select session_account, slot, session_id, tx_index, ix_index, inner_index
        from finalizes
        where startsWith(generation, 'g2') and not is_bundle
    )
    where session_id != ''
    group by session_account, slot
),

attached_bundles as (
    select
        concat(b.session_account, ':', a.latest_session_id) as upload_key,
        b.upload_group as upload_group,
        b.generation as generation,
        b.program_id as program_id,
        b.instruction as instruction,
        b.session_account as session_account,
        a.latest_session_id as session_id,
        b.is_bundle as is_bundle,
        b.declared_total as declared_total,
        b.metadata_total as metadata_total,
        b.merkle_root as merkle_root,
        b.metadata as metadata,
        b.seq as seq,
        b.slot as slot,
        b.signature as signature,
        b.tx_index as tx_index,
        b.ix_index as ix_index,
        b.inner_index as inner_index,
        b.tx_failed as tx_failed,
        b.ingested_at as ingested_at
    from bundles as b
    asof left join g2_session_activity as a
        on b.session_account = a.session_account and b.slot >= a.slot
)

select * from session_finalizes
union all
select * from attached_bundles
{%- endmacro %}
