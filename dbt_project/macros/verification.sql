{#- Verification: proving that a rebuilt upload is the one uploaded, where the protocol commits to
    its content (docs/protocol.md, "Verification"). Only G1 does: db_code_in's `offset` is a Merkle
    root over the pieces (IQ6900/iq6900_backend src/provider/main.provider.ts generateMerkleRoot).
    G2's merkle_root algorithm is not public and G3 commits no hash of the file, so those uploads
    are 'unverifiable' with the reason. Computed in SQL so the verdict is queryable next to the
    status it qualifies (session_completeness and the marts built on it). -#}

{#- The G1 Merkle root of `leaves` (Array(String): base58(sha256(piece)) in piece order): each
    level pairs neighbours, parent = base58(sha256(left_b58 || right_b58)), an odd last node is
    paired with itself; one leaf is its own root; no leaves give ''. arrayFold runs one step per
    level (ceil(log2(n)) of them), so a 1000-piece list is 10 steps of array work. -#}
{% macro g1_merkle_root(leaves) -%}
arrayFold(
    (merkle_nodes, merkle_level) -> arrayMap(
        merkle_pair -> base58Encode(SHA256(concat(
            merkle_nodes[2 * merkle_pair - 1],
            if(2 * merkle_pair <= length(merkle_nodes), merkle_nodes[2 * merkle_pair], merkle_nodes[2 * merkle_pair - 1])))),
        range(1, toUInt64(intDiv(length(merkle_nodes) + 1, 2)) + 1)),
    range(toUInt64(ceil(log2(greatest(length({{ leaves }}), 1))))),
    CAST({{ leaves }} AS Array(String)))[1]
{%- endmacro %}

{#- The leaf of one piece: base58 of its sha256 (the piece is the send_code `code` string's bytes). -#}
{% macro g1_merkle_leaf(piece) -%}
base58Encode(SHA256({{ piece }}))
{%- endmacro %}

{#- A committed root worth comparing: base58 text of exactly 32 bytes. Anything else in `offset`
    (empty, a number, free text) is not a Merkle root and makes the upload unverifiable. -#}
{% macro is_base58_sha256(text) -%}
(length({{ text }}) between 32 and 44 and length(tryBase58Decode({{ text }})) = 32)
{%- endmacro %}

{#- verification (verified / mismatch / unverifiable) of one upload row of session_completeness'
    pipeline; the columns it reads: status, upload_shape, generation, merkle_root, committed_root,
    computed_root, root_leaves. -#}
{% macro verification_verdict() -%}
multiIf(
    generation = 'g1' and upload_shape = 'linked_list' and status = 'complete'
        and {{ is_base58_sha256('committed_root') }} and computed_root = committed_root, 'verified',
    generation = 'g1' and upload_shape = 'linked_list' and status = 'complete'
        and {{ is_base58_sha256('committed_root') }}, 'mismatch',
    'unverifiable')
{%- endmacro %}

{#- One line saying why; hostile chain text (offset) is cut to 64 characters. -#}
{% macro verification_reason() -%}
multiIf(
    verification = 'verified',
        concat('G1 Merkle root of ', toString(root_leaves), ' piece(s) equals db_code_in offset'),
    verification = 'mismatch',
        concat('G1 Merkle root of the ', toString(root_leaves), ' piece(s) is ', computed_root,
               ' but db_code_in offset is ', committed_root, ': a piece differs from what was uploaded'),
    generation = 'g1' and upload_shape = 'linked_list' and status != 'complete',
        concat('upload is ', status, ': the G1 Merkle root covers every piece'),
    generation = 'g1' and upload_shape = 'linked_list' and committed_root = '',
        'G1 db_code_in offset is empty: no Merkle root to check',
    generation = 'g1' and upload_shape = 'linked_list',
        concat('G1 db_code_in offset ', leftUTF8(committed_root, 64), ' is not a base58 sha256 Merkle root'),
    startsWith(generation, 'g2') and merkle_root = '',
        'G2 finalize carries no merkle_root',
    startsWith(generation, 'g2'),
        'G2 merkle_root algorithm is not public (IQ readers only display it): docs/protocol.md §9',
    generation = 'g3',
        'G3 commits no hash of the file (metadata: filetype, method, filename, total_chunks; the ChunkPosted hash is undocumented)',
    concat('generation ', generation, ' has no known commitment'))
{%- endmacro %}
