-- session_payloads must hold exactly the chosen chunks joined in index order: same length and
-- sha256 as a re-join done here, lengths that match the bytes, one payload per complete upload.
-- Re-reading payloads is the most expensive check there is: an incremental build covers the
-- uploads it recomputed (macros/changed_scope.sql); a full refresh or `--full-tests` verifies all.
with latest_build as (
    select upload_key
    from {{ ref('upload_payloads') }}
    where status = 'complete'{{ and_changed_upload('upload_key') }}
),

rejoined as (
    select
        upload_key,
        lower(hex(SHA256(arrayStringConcat(arrayMap(c -> c.2, arraySort(c -> c.1, groupArray((chunk_index, payload)))))))) as sha256_rejoined,
        sum(length(payload)) as length_rejoined
    from {{ ref('int_session_chunks') }}
    where copies_seen > 0
      and upload_key in (select upload_key from latest_build)
      and upload_key in (select upload_key from {{ ref('session_completeness') }} where status = 'complete')
    group by upload_key
),

stored as (
    select upload_key, sha256, payload_length, length(payload) = payload_length and length(file_bytes) = file_length as lengths_agree
    from {{ ref('session_payloads') }}
    where upload_key in (select upload_key from latest_build)
)

select r.upload_key, r.sha256_rejoined, p.sha256, r.length_rejoined, p.payload_length
from rejoined as r
left join stored as p on p.upload_key = r.upload_key
where p.sha256 != r.sha256_rejoined
   or p.payload_length != r.length_rejoined
   or not p.lengths_agree
