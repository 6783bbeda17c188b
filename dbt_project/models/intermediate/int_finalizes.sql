{{ config(materialized='view') }}
-- Every finalize with its upload_key resolved. G2-legacy finalize_bundle carries no session id:
-- it is attached to the upload on the same account whose instructions precede it, i.e. the
-- session id of the latest G2 chunk/finalize on that account at or before the bundle's slot
-- (ASOF JOIN; within one slot the latest by transaction order). A bundle with nothing before it
-- gets the key `<account>:` (an upload with no chunks, reported as missing chunks).
with session_finalizes as (
    select *
    from {{ ref('stg_finalizes') }}
    where not is_bundle
),

bundles as (
    select *
    from {{ ref('stg_finalizes') }}
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
        from {{ ref('stg_chunks') }}
        where startsWith(generation, 'g2')
        union all
        select session_account, slot, session_id, tx_index, ix_index, inner_index
        from {{ ref('stg_finalizes') }}
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
