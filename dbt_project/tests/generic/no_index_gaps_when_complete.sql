{#- For every row of `model` whose status is 'complete', the chunks in `chunks_model` must be
    exactly the indexes 0 .. expected-1, each present, none conflicting. Fails on each complete
    upload where that does not hold (with what was found). `column_name` is the upload key. -#}
{% test no_index_gaps_when_complete(model, column_name, chunks_model, expected_column='chunks_expected') %}
with complete_uploads as (
    select {{ column_name }} as upload_key, {{ expected_column }} as expected
    from {{ model }}
    where status = 'complete'
),

chunk_facts as (
    select
        upload_key,
        countIf(copies_seen > 0) as present,
        uniqExactIf(chunk_index, copies_seen > 0) as distinct_present,
        maxIf(chunk_index, copies_seen > 0) as max_index,
        countIf(distinct_payloads > 1) as conflicts
    from {{ chunks_model }}
    where upload_key in (select upload_key from complete_uploads)
    group by upload_key
)

select u.upload_key, u.expected, f.present, f.distinct_present, f.max_index, f.conflicts
from complete_uploads as u
left join chunk_facts as f on f.upload_key = u.upload_key
where u.expected is null
   or f.present != u.expected
   or f.distinct_present != u.expected
   or f.max_index + 1 != u.expected
   or f.conflicts > 0
{% endtest %}
