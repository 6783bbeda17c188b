{#- A switch, not a rule: how int_linked_walks looks up the next piece of a linked list. In a file
    of its own because unit tests override it (`overrides: macros: linked_walk_lookup: join` in
    int_linked_walks.yml) and the override should be easy to find. -#}

{#- How int_linked_walks finds the next piece: 'joinget' (hash lookup in the Join-engine table
    int_linked_pieces) or 'join' (a JOIN against it). Unit tests override this to 'join': their
    fixtures are subqueries, which joinGet cannot read. -#}
{% macro linked_walk_lookup() -%}joinget{%- endmacro %}
