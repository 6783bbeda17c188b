"""One ingest, as a frozen request: what to read and how. The defaults live here and only here: the
`ingest` command builds an `IngestRequest`; the Prefect flows and the commands running them carry an
`IngestParams` (the same options as a pydantic model: Prefect validates it and shows it as a form) and
turn it into an `IngestRequest` at the stage."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Final, Literal, Mapping, Sequence

from pydantic import BaseModel, ConfigDict, Field

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


# --- the same request as typed flow parameters ----------------------------------------------------

FOLLOW: Final = "follow"                # not a source: one round of following the chain (iq_etl.ingest.follow)
DEFAULT_MAX_EPOCHS = 1                  # follow: CAR epochs read per round (an epoch is ~0.5-0.8 TB on mainnet)
DEFAULT_MAX_RPC_SLOTS = 20_000          # follow: slots read over RPC per round (~2.2 h of chain)
SourceName = Literal["car", "rpc-blocks", "rpc-signatures", "follow"]


class IngestParams(BaseModel):
    """How to ingest, as one validated value: the `ingest` parameter of the Prefect flows (a form in
    the UI, checked before a run starts) and what the `run`, `backfill` and `reconcile` commands build
    from their options. What to read (the slot spec, reconcile's ranges) and how this process shows it
    (progress bar, run id) are not here: `request()` adds them and gives the stage its IngestRequest.
    Defaults are IngestRequest's (DEFAULTS)."""
    model_config = ConfigDict(extra="forbid", frozen=True)

    # None: the flow's default, so that a partial `ingest` given to a deployment keeps it (the pipeline
    # follows the chain; the others, and the pipeline given a slot spec, read CAR).
    source: SourceName | None = Field(default=None, description="car | rpc-blocks | rpc-signatures | follow (one "
                                      "round of following the chain); null: the flow's default (pipeline: follow, "
                                      "others: car)")
    car_url: str | None = Field(default=None, description="CAR path/URL, may contain {epoch}; null: IQ_CAR_URL / Old Faithful")
    rpc_url: str | None = Field(default=None, description="JSON-RPC URL; null: IQ_RPC_URL / SOLANA_RPC_URL")
    session_pdas: list[str] | None = Field(default=None, description="only these session accounts; without a slot spec their "
                                           "window is discovered; null: IQ_SESSION_PDA_LIST")
    slot_padding: int = Field(default=DEFAULTS.slot_padding, ge=0, description="slots around a discovered window")
    max_signature_pages: int = Field(default=DEFAULTS.max_signature_pages, ge=1,
                                     description="getSignaturesForAddress pages (1000 signatures each) per account")
    threads: int | None = Field(default=None, ge=1, description="ingest workers; null: JETSTREAMER_THREADS")
    resume: bool = Field(default=DEFAULTS.resume, description="skip sub-ranges earlier runs completed")
    extra_program_ids: list[str] | None = Field(default=None, description="programs ingested besides IQ_PROGRAM_ID")
    subrange_slots: int = Field(default=DEFAULTS.subrange_slots, ge=1, description="slots per resumable sub-range (and task)")
    dask_address: str | None = Field(default=None, description="tcp://HOST:PORT of a Dask scheduler: sub-ranges as tasks "
                                     "there; null: IQ_DASK_ADDRESS")
    dask_workers: int | None = Field(default=None, ge=1, description="without an address: a local Dask cluster of N processes")
    max_epochs: int = Field(default=DEFAULT_MAX_EPOCHS, ge=0, description="follow: archived epochs read from CAR per run")
    max_rpc_slots: int = Field(default=DEFAULT_MAX_RPC_SLOTS, ge=0, description="follow: slots read over RPC per run")

    def request(self, slot_spec: str | None = None, *, ranges: Sequence[SlotRange | tuple[int, int]] = (),
                source: str | None = None, run_id: str | None = None, progress: bool = False,
                on_progress: Callable[[ProgressReport], None] | None = None) -> IngestRequest:
        """The stage's request for `slot_spec` (or explicit `ranges`); `source` overrides this one's (a
        following pipeline given a slot spec reads it from car)."""
        chosen = source or self.source
        source = DEFAULTS.source if chosen in (None, FOLLOW) else str(chosen)
        return IngestRequest(
            slot_spec=slot_spec, ranges=tuple(SlotRange(*r) for r in ranges), source=source, car_url=self.car_url,
            rpc_url=self.rpc_url, session_pdas=tuple(self.session_pdas or ()), slot_padding=self.slot_padding,
            max_signature_pages=self.max_signature_pages, threads=self.threads, resume=self.resume, run_id=run_id,
            progress=progress, subrange_slots=self.subrange_slots, extra_program_ids=tuple(self.extra_program_ids or ()),
            on_progress=on_progress)


__all__ = ["DEFAULTS", "DEFAULT_MAX_EPOCHS", "DEFAULT_MAX_RPC_SLOTS", "FOLLOW", "IngestParams", "IngestRequest", "SOURCES"]
