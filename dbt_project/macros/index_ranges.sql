{#- Chunk-index ranges: sorted arrays of present indexes turned into runs, gaps and their text
    form. Array expressions rather than range(total), so a hostile total of 4 billion costs
    nothing; used by session_completeness and chunk_coverage. -#}

{#- Runs of consecutive values in a sorted array of distinct integers, as (first, last) pairs:
    [0,1,2,5] -> [(0,2),(5,5)]. -#}
{% macro runs_of(sorted) -%}
arrayMap((run_first, run_last) -> (run_first, run_last),
    arrayFilter((run_value, run_pos) -> run_pos = 1 OR {{ sorted }}[run_pos - 1] + 1 != run_value, {{ sorted }}, arrayEnumerate({{ sorted }})),
    arrayFilter((run_value, run_pos) -> run_pos = length({{ sorted }}) OR {{ sorted }}[run_pos + 1] != run_value + 1, {{ sorted }}, arrayEnumerate({{ sorted }})))
{%- endmacro %}

{#- Index ranges as text, e.g. [(3,7),(12,12)] -> '3-7,12'. -#}
{% macro compact_ranges(ranges) -%}
arrayStringConcat(arrayMap(index_range -> if(index_range.1 = index_range.2, toString(index_range.1), concat(toString(index_range.1), '-', toString(index_range.2))), {{ ranges }}), ',')
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
