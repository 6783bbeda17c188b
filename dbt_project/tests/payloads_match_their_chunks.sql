-- session_payloads must hold exactly the chosen chunks joined in index order: same length and
-- sha256 as a re-join done here, lengths that match the bytes, one payload per complete upload.
-- Re-reading every payload is the most expensive check there is, so it covers the uploads the
-- latest build (re)computed; a full refresh verifies everything.
with latest_build as (
    select upload_key
    from {{ ref('upload_payloads') }}
    where built_at = (select max(built_at) from {{ ref('upload_payloads') }})
),

rejoined as (
    select
        upload_key,
        lower(hex(SHA256(arrayStringConcat(arrayMap(c -> c.2, arraySort(c -> c.1, groupArray((chunk_index, payload)))))))) as sha256_rejoined,
        sum(length(payload)) as length_rejoined
    from {{ ref('int_session_chunks') }}
    where copies_seen > 0
      and upload_key in (select upload_key from {{ ref('session_completeness') }} where status = 'complete')
      and upload_key in (select upload_key from latest_build)
    group by upload_key
)

select r.upload_key, r.sha256_rejoined, p.sha256, r.length_rejoined, p.payload_length
from rejoined as r
left join {{ ref('session_payloads') }} as p on p.upload_key = r.upload_key
where p.sha256 != r.sha256_rejoined
   or p.payload_length != r.length_rejoined
   or p.payload_length != length(p.payload)
   or p.file_length != length(p.file_bytes)
