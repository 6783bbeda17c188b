{#- Protocol rules: what the IQ programs' instructions mean, as small SQL expressions the staging
    and intermediate models share. Kept in one place because the same rule must hold everywhere it
    is applied (a code-in finaliser recognised in one model and not in another would split an
    upload). The protocol itself: docs/protocol.md. -#}

{#- G3 instructions that finish an upload ("code-in" finalisers, docs/protocol.md §5). Their
    on_chain_path says what they finish: '' = inline payload in metadata.data, 80+ characters =
    a linked-list tail signature, otherwise the session PDA. -#}
{% macro g3_code_in_instructions() -%}
('user_inventory_code_in', 'user_inventory_code_in_for_free', 'db_code_in', 'db_instruction_code_in', 'wallet_connection_code_in')
{%- endmacro %}

{#- An on_chain_path this long is a transaction signature (base58 of 64 bytes is 87-88 chars). -#}
{% macro linked_tail_min_length() -%}80{%- endmacro %}

{#- upload_key of a session upload: G2 `<session_account>:<session_id hex>`, so a new session id
    on the same account is a new upload; G3 the session PDA itself (dbt_project/README.md, Rules:
    upload keys). -#}
{% macro session_upload_key(generation, session_account, session_id) -%}
if(startsWith({{ generation }}, 'g2'), concat({{ session_account }}, ':', {{ session_id }}), {{ session_account }})
{%- endmacro %}

{#- A u32 field of the metadata JSON, whether written as a number or a string; NULL when absent
    or not a number. -#}
{% macro metadata_uint32(metadata, key) -%}
toUInt32OrNull(trim(BOTH '"' FROM JSONExtractRaw({{ metadata }}, '{{ key }}')))
{%- endmacro %}
