{#- Fails on every combination of the given columns that occurs more than once (what
    dbt_utils.unique_combination_of_columns does; hub packages cannot be fetched here). -#}
{% test unique_combination_of_columns(model, combination_of_columns) %}
select {{ combination_of_columns | join(', ') }}, count() as occurrences
from {{ model }}
group by {{ combination_of_columns | join(', ') }}
having count() > 1
{% endtest %}
