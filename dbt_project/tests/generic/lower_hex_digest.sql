{#- The column holds a lower-case hex digest of `length` characters, or '' when `allow_empty`. -#}
{% test lower_hex_digest(model, column_name, length=64, allow_empty=false) %}
select {{ column_name }}
from {{ model }}
where not (
    match({{ column_name }}, '^[0-9a-f]{{ '{' }}{{ length }}{{ '}' }}$')
    {% if allow_empty %}or {{ column_name }} = ''{% endif %}
)
{% endtest %}
