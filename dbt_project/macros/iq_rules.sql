{#- Small SQL building blocks shared by the models. Each one states the rule it encodes. -#}

{#- G3 instructions that finish an upload ("code-in" finalisers, PROTOCOL.md §5). Their
    on_chain_path says what they finish: '' = inline payload in metadata.data, 80+ characters =
    a linked-list tail signature, otherwise the session PDA. -#}
{% macro g3_code_in_instructions() -%}
('user_inventory_code_in', 'user_inventory_code_in_for_free', 'db_code_in', 'db_instruction_code_in', 'wallet_connection_code_in')
{%- endmacro %}

{#- An on_chain_path this long is a transaction signature (base58 of 64 bytes is 87-88 chars). -#}
{% macro linked_tail_min_length() -%}80{%- endmacro %}

{#- upload_key of a session upload (PREAMBLE): G2 `<session_account>:<session_id hex>`, so a new
    session id on the same account is a new upload; G3 the session PDA itself. -#}
{% macro session_upload_key(generation, session_account, session_id) -%}
if(startsWith({{ generation }}, 'g2'), concat({{ session_account }}, ':', {{ session_id }}), {{ session_account }})
{%- endmacro %}

{#- A u32 field of the metadata JSON, whether written as a number or a string; NULL when absent
    or not a number. -#}
{% macro metadata_uint32(metadata, key) -%}
toUInt32OrNull(trim(BOTH '"' FROM JSONExtractRaw({{ metadata }}, '{{ key }}')))
{%- endmacro %}

{#- Incremental watermark: newest source row the previous build of this model saw, minus
    `iq_lookback_seconds` (see dbt_project.yml). Models store it per row as source_ingested_at. -#}
{% macro previous_watermark() -%}
(select max(source_ingested_at) - toIntervalSecond({{ var('iq_lookback_seconds') }}) from {{ this }})
{%- endmacro %}

{#- Index ranges as text, e.g. [(3,7),(12,12)] -> '3-7,12'. -#}
{% macro compact_ranges(ranges) -%}
arrayStringConcat(arrayMap(index_range -> if(index_range.1 = index_range.2, toString(index_range.1), concat(toString(index_range.1), '-', toString(index_range.2))), {{ ranges }}), ',')
{%- endmacro %}

{#- Runs of consecutive values in a sorted array of distinct integers, as (first, last) pairs:
    [0,1,2,5] -> [(0,2),(5,5)]. -#}
{% macro runs_of(sorted) -%}
arrayMap((run_first, run_last) -> (run_first, run_last),
    arrayFilter((run_value, run_pos) -> run_pos = 1 OR {{ sorted }}[run_pos - 1] + 1 != run_value, {{ sorted }}, arrayEnumerate({{ sorted }})),
    arrayFilter((run_value, run_pos) -> run_pos = length({{ sorted }}) OR {{ sorted }}[run_pos + 1] != run_value + 1, {{ sorted }}, arrayEnumerate({{ sorted }})))
{%- endmacro %}

{#- Base64 decoding as Node's Buffer.from(text, 'base64') does it (what the IQ gateway runs):
    decoding stops at the first '=', the URL-safe alphabet is accepted, any other character is
    skipped, and a dangling 6-bit group is dropped. Strictly valid base64 decodes identically.
    (The lambda over a one-element array binds the cleaned text once without a query-wide alias.) -#}
{% macro node_base64_decode(text) -%}
arrayElement(arrayMap(b64_text -> tryBase64Decode(multiIf(
        length(b64_text) % 4 = 1, substring(b64_text, 1, length(b64_text) - 1),
        length(b64_text) % 4 = 2, concat(b64_text, '=='),
        length(b64_text) % 4 = 3, concat(b64_text, '='),
        b64_text)),
    [replaceRegexpAll(translate(
        substringIndex({{ text }}, '=', 1),
        '-_', '+/'), '[^A-Za-z0-9+/]', '')]), 1)
{%- endmacro %}

{#- Which rule the IQ gateway (decodeAssetData, PROTOCOL.md §5) applies to joined text:
    'data_url' (starts with data: and has a comma), 'base64' (longer than 100 and the first 100
    characters are all base64 alphabet), else 'text'. A data: prefix without a comma makes the
    gateway throw; here it falls to 'text' (the bytes as they are). -#}
{% macro gateway_decode_rule(text) -%}
multiIf(
    startsWith({{ text }}, 'data:') AND position({{ text }}, ',') > 0, 'data_url',
    length({{ text }}) > 100 AND match(substring({{ text }}, 1, 100), '^[A-Za-z0-9+/=]+$'), 'base64',
    'text')
{%- endmacro %}

{#- The file bytes the gateway would serve for joined text, under the rule above. data: URLs
    decode the part between the first and second comma, as JS `split(",")[1]` does. -#}
{% macro gateway_file_bytes(text, rule) -%}
multiIf(
    {{ rule }} = 'data_url', {{ node_base64_decode("splitByChar(',', " ~ text ~ ")[2]") }},
    {{ rule }} = 'base64', {{ node_base64_decode(text) }},
    {{ text }})
{%- endmacro %}

{#- The gaps of a sorted array of distinct present indexes inside [0, bound), each with the slots
    of the present chunks around it: (first_missing, last_missing, slot_before, slot_after).
    A gap at the start uses start_slot as its lower neighbour, one at the end end_slot. Computed
    from neighbours, so a hostile total of 4 billion costs nothing (no range(total) is built). -#}
{% macro gaps_with_slots(present, slots, bound, start_slot, end_slot) -%}
arrayFilter(gap -> gap.1 <= gap.2,
    arrayMap(gap_pos -> (
            if(gap_pos = 1, toInt64(0), toInt64({{ present }}[gap_pos - 1]) + 1),
            if(gap_pos = length({{ present }}) + 1, toInt64({{ bound }}) - 1, toInt64({{ present }}[gap_pos]) - 1),
            toUInt64(if(gap_pos = 1, {{ start_slot }}, {{ slots }}[gap_pos - 1])),
            toUInt64(if(gap_pos = length({{ present }}) + 1, {{ end_slot }}, {{ slots }}[gap_pos]))
        ),
        range(1, length({{ present }}) + 2)))
{%- endmacro %}

{#- The refresh group of a raw instruction: the unit int_uploads and session_completeness
    recompute when any of its rows is (re-)ingested. Session uploads: the session account (all of
    a G2 account's uploads together, since a finalize_bundle may move between them); inline: the
    code-in's signature; every linked list: one group, LINKED_LISTS_GROUP, since a new piece can
    turn one list's tail into another's middle. Must agree with the groups int_uploads assigns. -#}
{% macro linked_lists_group() -%}'linked-lists'{%- endmacro %}
{% macro refresh_group_of_raw() -%}
multiIf(
    kind in ('linked_piece', 'linked_index')
        or (generation = 'g3' and instruction in {{ g3_code_in_instructions() }} and length(on_chain_path) >= {{ linked_tail_min_length() }}),
        {{ linked_lists_group() }},
    generation = 'g3' and instruction in {{ g3_code_in_instructions() }} and on_chain_path = '', signature,
    generation = 'g3' and instruction in {{ g3_code_in_instructions() }}, if(session_account != '', session_account, on_chain_path),
    session_account)
{%- endmacro %}

{#- The deduplicated raw instructions (FINAL on the ReplacingMergeTree key), typed, optionally
    restricted by `prewhere`. PREWHERE, not WHERE: ClickHouse does not move a WHERE under FINAL
    into PREWHERE (optimize_move_to_prewhere_if_final is off), so a view filtering after FINAL
    would merge every row of the table first; with PREWHERE a chunks-only view reads chunk rows
    only (measured 0.01 s vs 0.27 s on 2.2 M rows). Filtering before the merge is safe here: the
    copies of one key are re-ingests of the same instruction and agree on kind and generation. -#}
{% macro raw_instructions_final(prewhere=none) -%}
select
    slot,
    block_time,
    signature,
    tx_index,
    ix_index,
    inner_index,
    program_id,
    generation,
    kind,
    instruction,
    session_account,
    session_id,
    chunk_index,
    total_chunks,
    seq,
    method,
    decode_break,
    merkle_root,
    payload,
    on_chain_path,
    metadata,
    before_tx,
    handle,
    tail_tx,
    type_field,
    offset,
    accounts,
    tx_status,
    tx_error,
    -- Bool, not the LowCardinality(UInt8) a comparison of a LowCardinality column gives: dbt unit
    -- tests cast fixtures to the column type, and ClickHouse refuses to create LowCardinality(UInt8)
    CAST(tx_status = 'failed' AS Bool) as tx_failed,
    source,
    run_id,
    ingested_at
from {{ source('iq', 'raw_instructions') }} final
{% if prewhere %}prewhere {{ prewhere }}{% endif %}
{%- endmacro %}

{#- stg_chunks' query, optionally narrowed before FINAL by `session_filter` (a condition on
    session_account): incremental models use it to read only the chunks of the groups they
    rebuild (PREWHERE under FINAL: 5x faster than filtering the view, measured on 2.2 M rows). -#}
{% macro stg_chunks_select(session_filter=none) -%}
with chunk_instructions as (
    {{ raw_instructions_final("kind = 'chunk'" ~ (" and " ~ session_filter if session_filter else "")) }}
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

{#- How int_linked_walks finds the next piece: 'joinget' (hash lookup in the Join-engine table
    int_linked_pieces) or 'join' (a JOIN against it). Unit tests override this to 'join': their
    fixtures are subqueries, which joinGet cannot read. -#}
{% macro linked_walk_lookup() -%}joinget{%- endmacro %}
