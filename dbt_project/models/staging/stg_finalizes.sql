-- Instructions that close a session upload and may declare its total:
--   G2 finalize / finalize_hybrid_session (session id given) and finalize_bundle (no session id:
--   is_bundle, attached to an upload by int_finalizes), and
--   G3 code-in finalisers whose on_chain_path is short (a session PDA): the session is the
--   instruction's session account (accounts[4]), else the on_chain_path; SessionFinalize carries
--   the declared total and metadata JSON may repeat it as total_chunks.
with g2_finalizes as (
    select
        *,
        session_account as session_key_account,
        session_id = '' as is_bundle
    from ({{ raw_instructions_final("kind = 'finalize' and startsWith(generation, 'g2')") }})
),

g3_session_code_ins as (
    select
        *,
        -- the account the program finalised (accounts[4], as the decoder reports it) wins over
        -- on_chain_path: the program checks the account, nobody checks the path text
        if(session_account != '', session_account, on_chain_path) as session_key_account,
        false as is_bundle
    from ({{ raw_instructions_final("generation = 'g3' and instruction in " ~ g3_code_in_instructions()) }})
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
