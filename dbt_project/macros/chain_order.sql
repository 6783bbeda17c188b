{#- Where an instruction sits on chain, and the sentinel for "no slot". Named because the same
    tuple is written at every "earliest/latest copy" choice (int_session_chunks, int_uploads):
    one spelling keeps every choice on the same order. -#}

{#- Chain order of an instruction: slot, then the transaction's position in its block, then the
    instruction's position in the transaction (top-level, then inner). `prefix` is a table alias
    with its dot, e.g. chain_order('c.') -> (c.slot, c.tx_index, c.ix_index, c.inner_index).
    The earliest successful copy by this order is the chosen one (dbt_project/README.md, Rules). -#}
{% macro chain_order(prefix='') -%}
({{ prefix }}slot, {{ prefix }}tx_index, {{ prefix }}ix_index, {{ prefix }}inner_index)
{%- endmacro %}

{#- The largest UInt64: stands for "no slot" where the least of several optional slots is taken
    (least() over if(has_rows, slot, no_slot())), and is turned back into 0 afterwards. -#}
{% macro no_slot() -%}18446744073709551615{%- endmacro %}
