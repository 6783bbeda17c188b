"""One ingest, as a frozen request: what to read and how. The defaults live here and only here: the
`ingest` and `run` commands, the Prefect flows and reconcile all build an `IngestRequest` (or read
their defaults from `DEFAULTS`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from iq_etl.ingest.progress import ProgressReport
from iq_etl.ingest.sources.base import SOURCES
from iq_etl.solana.slots import SlotRange


@dataclass(frozen=True)
class IngestRequest:
    slot_spec: str | None = None           # S:E, N or A-B; or None with `ranges` or `session_pdas`
    ranges: tuple[SlotRange, ...] = ()      # explicit slot ranges (reconcile), added to slot_spec's
    source: str = "car"                     # one of SOURCES
    car_url: str | None = None              # None: settings.car_url
    rpc_url: str | None = None              # None: settings.rpc_url
    session_pdas: tuple[str, ...] = ()      # only instructions touching these; discovers the window
    slot_padding: int = 200                 # slots added on both sides of a discovered window
    max_signature_pages: int = 25           # getSignaturesForAddress pages (1000 each) per PDA / program
    threads: int | None = None              # None: settings.threads (JETSTREAMER_THREADS)
    resume: bool = True                     # skip sub-ranges an earlier run finished
    run_id: str | None = None               # None: a fresh one
    progress: bool = False                  # a progress bar on the terminal
    subrange_slots: int = 2000              # slots per resumable sub-range
    batch_rows: int = 5000                  # rows per insert
    flush_interval_s: float = 5.0           # seconds between flushes at most
    extra_program_ids: tuple[str, ...] = ()  # ingest these program ids too (a development chain's)
    rpc_options: Mapping[str, Any] = field(default_factory=dict)  # RpcClient keyword arguments
    worker_kind: str = "auto"               # --threads workers: auto | process | thread
    heartbeat_s: float = 30.0               # without a progress bar: an INFO progress line this often at most
    on_progress: Callable[[ProgressReport], None] | None = field(default=None, compare=False)  # e.g. a Prefect artifact

    def __post_init__(self) -> None:
        # Accept any sequence from callers; keep tuples (hashable, picklable, immutable).
        for name in ("ranges", "session_pdas", "extra_program_ids"):
            value = getattr(self, name)
            if value is None:
                value = ()
            object.__setattr__(self, name, tuple(SlotRange(*r) for r in value) if name == "ranges" else tuple(value))
        object.__setattr__(self, "rpc_options", dict(self.rpc_options or {}))


DEFAULTS = IngestRequest()
__all__ = ["DEFAULTS", "IngestRequest", "SOURCES"]
