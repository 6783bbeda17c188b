"""Warehouse side of exporting: which uploads are waiting for a target, their payloads, and the
append-only attempt ledger `iq.exports` (one row per attempt). All SQL takes parameters.

The shared warehouse client is not assumed to be thread-safe: only the exporting run's
coordinating thread calls these functions.
"""
from __future__ import annotations

import datetime as _dt
import logging
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from clickhouse_connect.driver import Client

from iq_etl.errors import WarehouseError
from iq_etl.export.body import TEXT_FROM_CHAIN, UPLOAD_COLUMNS, ReadyUpload
from iq_etl.warehouse.catalog import table_exists

log = logging.getLogger(__name__)

MART = "iq.sessions_ready_to_export"

# Attempt statuses (iq.exports.status).
DELIVERED = "delivered"
FAILED = "failed"          # this run gave up on the upload; a later run tries again
RETRYING = "retrying"      # a transient failure; another attempt follows within the run
REFUSED = "refused"        # not sent: over the size limit, content not matching its sha256, or a verification mismatch
DRY_RUN = "dry_run"        # `--dry-run`: would have been sent
NOT_ATTEMPTED = "not_attempted"  # left for the next run: the target stopped answering (circuit breaker)
STATUSES = (DELIVERED, FAILED, RETRYING, REFUSED, DRY_RUN, NOT_ATTEMPTED)

EXCERPT_LIMIT = 500        # characters of a response body or error kept in the ledger

_EXPORT_COLUMNS = ("session_key", "sha256", "target", "attempt", "status", "http_status",
                   "response_excerpt", "error", "payload_bytes", "run_id", "attempted_at")


def utcnow() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


@dataclass(frozen=True)
class AttemptOutcome:
    """What one delivery attempt produced (target-independent)."""

    status: str
    http_status: int | None = None
    response_excerpt: str = ""
    error: str = ""

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"unknown export status {self.status!r}")


@dataclass(frozen=True)
class AttemptRecord:
    """One row of iq.exports."""

    session_key: str
    sha256: str
    target: str
    attempt: int  # 1.. within a run for real sends; 0 when nothing was sent (refused, dry_run)
    status: str
    http_status: int | None = None
    response_excerpt: str = ""
    error: str = ""
    payload_bytes: int = 0
    run_id: str = ""
    attempted_at: _dt.datetime = field(default_factory=utcnow)

    def as_row(self) -> list[Any]:
        return [self.session_key, self.sha256, self.target, self.attempt, self.status, self.http_status,
                self.response_excerpt[:EXCERPT_LIMIT], self.error[:EXCERPT_LIMIT], self.payload_bytes,
                self.run_id, self.attempted_at]


@dataclass(frozen=True)
class Candidate:
    """An upload waiting for a target, without its payload (cheap to hold many of)."""

    upload_key: str
    sha256: str
    payload_length: int
    verification: str = "unverifiable"
    verification_reason: str = ""


def mart_exists(client: Client) -> bool:
    return table_exists(client, MART)


def pending_uploads(client: Client, target: str, limit: int | None = None) -> list[Candidate]:
    """Complete uploads not yet delivered to `target`, oldest first, with their verification (the
    runner refuses a 'mismatch' and records the refusal: it is listed, never sent).

    Besides the mart's `delivered_targets`, the ledger is consulted directly: the mart may be a
    table built before this process's last deliveries (dbt runs between exports, not after each)."""
    sql = f"""
        SELECT upload_key, sha256, payload_length, verification, verification_reason
        FROM {MART}
        WHERE NOT has(delivered_targets, {{target:String}})
          AND (upload_key, sha256) NOT IN (
              SELECT session_key, sha256 FROM iq.exports
              WHERE target = {{target:String}} AND status = 'delivered')
        ORDER BY first_slot, upload_key, sha256
    """
    params: dict[str, Any] = {"target": target}
    if limit is not None:
        sql += " LIMIT {limit:UInt64}"
        params["limit"] = int(limit)
    try:
        rows = client.query(sql, parameters=params).result_rows
    except Exception as exc:  # noqa: BLE001 - one clear line naming what failed
        raise WarehouseError(f"reading {MART}: {str(exc).strip().splitlines()[0][:300]}") from None
    seen: set[tuple[str, str]] = set()
    out: list[Candidate] = []
    for key, sha, length, verification, reason in rows:
        if (key, sha) in seen:  # the same upload twice in the mart must still be sent once
            continue
        seen.add((key, sha))
        out.append(Candidate(key, sha, int(length), str(verification), str(reason)))
    return out


def load_uploads(client: Client, candidates: Sequence[Candidate]) -> dict[tuple[str, str], ReadyUpload]:
    """The full mart rows (payloads included) for `candidates`, keyed by (upload_key, sha256)."""
    if not candidates:
        return {}
    keys = sorted({c.upload_key for c in candidates})
    wanted = {(c.upload_key, c.sha256) for c in candidates}
    sql = f"SELECT {', '.join(UPLOAD_COLUMNS)} FROM {MART} WHERE upload_key IN {{keys:Array(String)}}"
    try:
        result = client.query(sql, parameters={"keys": keys},
                              column_formats={name: "bytes" for name in TEXT_FROM_CHAIN})
    except Exception as exc:  # noqa: BLE001
        raise WarehouseError(f"reading payloads from {MART}: {str(exc).strip().splitlines()[0][:300]}") from None
    out: dict[tuple[str, str], ReadyUpload] = {}
    for row in result.result_rows:
        upload = ReadyUpload.from_row(result.column_names, row)
        if (upload.upload_key, upload.sha256) in wanted:
            out.setdefault((upload.upload_key, upload.sha256), upload)
    return out


def record_attempts(client: Client, records: Iterable[AttemptRecord]) -> int:
    """Append attempt rows to iq.exports; returns how many were written."""
    rows = [r.as_row() for r in records]
    if not rows:
        return 0
    try:
        client.insert("iq.exports", rows, column_names=list(_EXPORT_COLUMNS))
    except Exception as exc:  # noqa: BLE001
        raise WarehouseError(f"writing {len(rows)} row(s) to iq.exports: {str(exc).strip().splitlines()[0][:300]}") from None
    return len(rows)


def is_delivered(client: Client, upload_key: str, sha256: str, target: str) -> bool:
    return bool(client.query(
        "SELECT count() FROM iq.exports WHERE session_key = {k:String} AND sha256 = {s:String} "
        "AND target = {t:String} AND status = 'delivered'",
        parameters={"k": upload_key, "s": sha256, "t": target},
    ).result_rows[0][0])


def attempts_for(client: Client, upload_key: str, target: str | None = None) -> list[dict[str, Any]]:
    """Every ledger row of one upload (optionally one target), oldest first: for status and tests."""
    sql = f"SELECT {', '.join(_EXPORT_COLUMNS)} FROM iq.exports WHERE session_key = {{k:String}}"
    params: dict[str, Any] = {"k": upload_key}
    if target is not None:
        sql += " AND target = {t:String}"
        params["t"] = target
    sql += " ORDER BY attempted_at, attempt"
    result = client.query(sql, parameters=params)
    return [dict(zip(result.column_names, row)) for row in result.result_rows]
