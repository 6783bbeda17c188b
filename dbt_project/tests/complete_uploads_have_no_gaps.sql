-- A complete upload must have every index 0 .. total-1 present: fails on any that does not,
-- reading the chunks themselves rather than the mart's own counters.
with complete_uploads as (
    select upload_key, chunks_expected
    from {{ ref('session_completeness') }}
    where status = 'complete'{{ and_changed_upload('upload_key') }}
),

present as (
    select upload_key, groupArrayIf(chunk_index, copies_seen > 0) as indexes
    from {{ ref('int_session_chunks') }}
    where upload_key in (select upload_key from complete_uploads)
    group by upload_key
)

select u.upload_key, u.chunks_expected, p.indexes
from complete_uploads as u
left join present as p on p.upload_key = u.upload_key
where arraySort(arrayDistinct(p.indexes)) != arrayMap(i -> toUInt32(i), range(toUInt32(ifNull(u.chunks_expected, 0))))
