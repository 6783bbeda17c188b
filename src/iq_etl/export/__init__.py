"""Export: deliver complete uploads exactly once to the reader backend or a `file://` folder.

- `body`: the seed-compatible JSON body from one `iq.sessions_ready_to_export` row.
- `http_target`: the reader backend client (retries, backoff, Retry-After, token handling).
- `file_target`: the `file://` target and the file name sanitiser.
- `ledger`: reads the mart, appends every attempt to `iq.exports`.
- `runner`: `export_ready(...)`, one run with bounded concurrency.
"""
from iq_etl.export.body import ReadyUpload, build_body
from iq_etl.export.file_target import FileTarget, safe_filename, session_dirname
from iq_etl.export.http_target import HttpTarget, RetryPolicy, redact_target
from iq_etl.export.runner import DEFAULT_CONCURRENCY, ExportOptions, ExportSummary, export_ready, open_target

__all__ = [
    "DEFAULT_CONCURRENCY", "ExportOptions", "ExportSummary", "FileTarget", "HttpTarget", "ReadyUpload",
    "RetryPolicy", "build_body", "export_ready", "open_target", "redact_target", "safe_filename",
    "session_dirname",
]
