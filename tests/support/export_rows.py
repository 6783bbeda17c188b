"""Shared helpers for the export tests: hand-made rows for `iq.sessions_ready_to_export`.

Until the dbt mart exists in a test warehouse, `create_standin_mart` creates a plain TABLE named
iq.sessions_ready_to_export with exactly the columns of the export contract (docs/DECISIONS.md,
"Upload keys and the export contract"). It stands in for the dbt view's contract only: the runner
must not depend on anything else. Its `delivered_targets` is whatever the test inserts (the real
view derives it from iq.exports; the runner also consults iq.exports itself).
"""
from __future__ import annotations

import base64
import dataclasses
import hashlib
import re
from typing import Any

from iq_etl.export import ExportOptions, RetryPolicy
from iq_etl.settings import G1_PROGRAM_ID, G2_PROGRAM_ID, G3_PROGRAM_ID

CONTRACT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("upload_key", "String"), ("generation", "String"), ("program_id", "String"),
    ("session_account", "String"), ("session_id", "String"), ("total_chunks", "UInt32"),
    ("chunk_count", "UInt32"), ("merkle_root", "String"), ("method", "Nullable(UInt8)"),
    ("first_slot", "UInt64"), ("last_slot", "UInt64"), ("finalize_slot", "Nullable(UInt64)"),
    ("finalize_signature", "String"), ("payload_base64", "String"), ("sha256", "String"),
    ("payload_length", "UInt64"), ("file_base64", "String"), ("file_sha256", "String"),
    ("decode_rule", "String"), ("filename", "String"), ("filetype", "String"), ("metadata", "String"),
    ("verification", "String"), ("verification_reason", "String"), ("delivered_targets", "Array(String)"),
)
COLUMN_NAMES = [name for name, _ in CONTRACT_COLUMNS]

SESSION_A = "7Jh5q3i7m1gYvZ4bNfW2X9yT8kLpR6sD3aQ1cE5uVxBn"
SIG_TAIL = "5" * 87 + "z"  # stands for a base58 transaction signature (88 chars)
_B64 = re.compile(r"^[A-Za-z0-9+/=]*$")


def create_standin_mart(client: Any) -> None:
    columns = ",\n    ".join(f"{name} {kind}" for name, kind in CONTRACT_COLUMNS)
    client.command("DROP TABLE IF EXISTS iq.sessions_ready_to_export")
    client.command(f"CREATE TABLE iq.sessions_ready_to_export (\n    {columns}\n) ENGINE = MergeTree ORDER BY upload_key")


def file_bytes(joined: bytes) -> tuple[bytes, str]:
    """The gateway rule (docs/protocol.md §5) as the mart applies it: (file bytes, decode_rule)."""
    text = joined.decode("utf-8", errors="replace")
    if text.startswith("data:") and "," in text:
        return base64.b64decode(text.split(",", 1)[1]), "data_url"
    if len(text) > 100 and _B64.match(text[:100]):
        return base64.b64decode(text), "base64"
    return joined, "text"


def upload_row(upload_key: str, joined: bytes, *, generation: str = "g2_pinocchio", filename: str = "hello.txt",
               filetype: str = "txt", first_slot: int = 1000, session_account: str = SESSION_A,
               session_id: str = "00112233445566778899aabbccddeeff", merkle_root: str = "ab" * 32,
               method: int | None = 0, finalize_slot: int | None = 1010, finalize_signature: str = "finsig",
               chunks: int = 3, delivered_targets: tuple[str, ...] = (), verification: str = "unverifiable",
               verification_reason: str = "G2 merkle_root algorithm is not public") -> dict[str, Any]:
    program = {"g1": G1_PROGRAM_ID, "g3": G3_PROGRAM_ID}.get(generation, G2_PROGRAM_ID)
    data, rule = file_bytes(joined)
    return {
        "upload_key": upload_key, "generation": generation, "program_id": program,
        "session_account": session_account, "session_id": session_id, "total_chunks": chunks,
        "chunk_count": chunks, "merkle_root": merkle_root, "method": method, "first_slot": first_slot,
        "last_slot": first_slot + 5, "finalize_slot": finalize_slot, "finalize_signature": finalize_signature,
        "payload_base64": base64.b64encode(joined).decode(), "sha256": hashlib.sha256(joined).hexdigest(),
        "payload_length": len(joined), "file_base64": base64.b64encode(data).decode(),
        "file_sha256": hashlib.sha256(data).hexdigest(), "decode_rule": rule, "filename": filename,
        "filetype": filetype, "metadata": '{"filename": "%s"}' % filename.replace('"', "'"),
        "verification": verification, "verification_reason": verification_reason,
        "delivered_targets": list(delivered_targets),
    }


def insert_rows(client: Any, rows: list[dict[str, Any]]) -> None:
    client.insert("iq.sessions_ready_to_export", [[row[c] for c in COLUMN_NAMES] for row in rows],
                  column_names=COLUMN_NAMES)


def many_uploads(n: int, size: int = 300) -> list[dict[str, Any]]:
    """`n` distinct G2 sessions with text payloads of `size` bytes."""
    rows = []
    for i in range(n):
        joined = (f"upload {i}: " + "x" * size)[:size].encode()
        rows.append(upload_row(f"{SESSION_A}:{i:032x}", joined, first_slot=1000 + i, filename=f"file-{i}.txt"))
    return rows


FAST = ExportOptions(retry=RetryPolicy(max_attempts=4, backoff_base_s=0.01, backoff_max_s=0.05, jitter=0.5,
                                       retry_after_cap_s=0.05, connect_timeout_s=2.0, timeout_s=5.0))


def reader_settings(settings, server, token=None):
    """Settings pointing the reader backend at `server` (as IQ_READER_BASE_URL/ENDPOINT_PATH would)."""
    return dataclasses.replace(settings, reader_base_url=server.base_url, reader_endpoint_path=server.path,
                               reader_token=token)


def ledger_rows(client, **where):
    result = client.query("SELECT session_key, sha256, target, attempt, status, http_status, response_excerpt, error,"
                          " payload_bytes, run_id FROM iq.exports ORDER BY attempted_at, attempt")
    rows = [dict(zip(result.column_names, r)) for r in result.result_rows]
    return [r for r in rows if all(r[k] == v for k, v in where.items())]
