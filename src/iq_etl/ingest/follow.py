"""Follow the chain: keep the warehouse current from a start slot to the chain tip, by itself.

Old Faithful publishes an epoch's CAR archive only after the epoch ended (the newest epochs lag the
chain by one or two days), so one follow round:

1. asks the RPC endpoint for the finalized tip (and its block time);
2. for every epoch from the start slot's to the tip's, the slots not yet covered by a finished scan
   of *any* source for this program set (iq.scan_ranges, scope-aware): nothing is read twice, and
   an epoch that appears in the archive after RPC covered it has nothing left to read;
3. reads the uncovered parts of the epochs the archive serves from CAR, oldest first, at most
   `max_epochs` epochs per round;
4. reads the uncovered slots past the archive's edge from RPC (`getBlock`, block by block), oldest
   first, at most `max_rpc_slots` per round;
5. says what is left, and where the covered frontier (the end of contiguous coverage from the start
   slot) stands against the tip: the lag, in slots and in seconds (by block times).

A round does a bounded amount of work; the next scheduled round continues. Every read goes through
`run_ingest` (sub-ranges, resume, ledger): a killed round loses nothing.
"""
from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from clickhouse_connect.driver import Client

from iq_etl.errors import IQEtlError, SourceError, SourceMissing
from iq_etl.ingest.decode import InstructionFilter
from iq_etl.ingest.request import DEFAULT_MAX_EPOCHS, DEFAULT_MAX_RPC_SLOTS, IngestRequest  # noqa: F401 - re-exported
from iq_etl.ingest.run import IngestSummary, run_ingest
from iq_etl.settings import Settings
from iq_etl.solana.slots import SlotRange, epoch_bounds, epoch_of
from iq_etl.warehouse.scan_ledger import covered_by_any_source, subtract
from iq_etl.warehouse.schema import migrate

log = logging.getLogger(__name__)


@dataclass
class FollowResult:
    start_slot: int
    tip_slot: int
    tip_time: dt.datetime | None
    archive_epochs: list[int] = field(default_factory=list)     # epochs with work whose archive is served
    unarchived_epochs: list[int] = field(default_factory=list)  # epochs with work the archive does not serve
    car_ranges: list[tuple[int, int]] = field(default_factory=list)   # read this round from CAR
    rpc_ranges: list[tuple[int, int]] = field(default_factory=list)   # read this round over RPC
    left_car_epochs: list[int] = field(default_factory=list)          # archived epochs left for later rounds
    left_rpc_slots: int = 0
    frontier_slot: int | None = None       # the end of contiguous coverage from start_slot (None: nothing yet)
    frontier_time: dt.datetime | None = None
    rows_written: int = 0
    slots_covered: int = 0
    seconds: float = 0.0
    ingests: list[dict[str, Any]] = field(default_factory=list)

    @property
    def lag_slots(self) -> int:
        return self.tip_slot - (self.frontier_slot if self.frontier_slot is not None else self.start_slot - 1)

    @property
    def lag_seconds(self) -> int | None:
        if self.tip_time is None or self.frontier_time is None:
            return None
        return max(0, int((self.tip_time - self.frontier_time).total_seconds()))

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["lag_slots"], out["lag_seconds"] = self.lag_slots, self.lag_seconds
        for key in ("tip_time", "frontier_time"):
            out[key] = out[key].isoformat() if out[key] is not None else None
        return out

    def line(self) -> str:
        lag = f"{self.lag_slots:,} slots" + (f" (~{_duration(self.lag_seconds)})" if self.lag_seconds is not None else "")
        left = []
        if self.left_car_epochs:
            left.append(f"{len(self.left_car_epochs)} archived epoch(s) ({', '.join(map(str, self.left_car_epochs[:5]))}"
                        f"{'…' if len(self.left_car_epochs) > 5 else ''})")
        if self.left_rpc_slots:
            left.append(f"{self.left_rpc_slots:,} slots over RPC")
        return (f"follow: tip {self.tip_slot}, covered to {self.frontier_slot if self.frontier_slot is not None else '-'}, "
                f"lag {lag}; read {len(self.car_ranges)} CAR range(s) and {len(self.rpc_ranges)} RPC range(s), "
                f"{self.rows_written:,} rows; left: {', '.join(left) or 'nothing'}")


def _duration(seconds: int | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds / 3600:.1f} h"


def chain_tip(rpc_url: str, rpc_options: dict[str, Any] | None = None) -> tuple[int, dt.datetime | None]:
    """The finalized tip slot and its block time (None when the node has none for it)."""
    from iq_etl.ingest.sources.rpc.client import RpcClient

    with RpcClient(rpc_url, **(rpc_options or {})) as rpc:
        tip = rpc.call("getSlot", [{"commitment": "finalized"}])
        if not isinstance(tip, int) or isinstance(tip, bool) or tip < 0:
            raise SourceError(f"getSlot at {rpc.url_redacted} answered {tip!r}, not a slot number")
        return tip, block_time(rpc, tip)


def block_time(rpc: Any, slot: int, look_back: int = 8) -> dt.datetime | None:
    """The block time of `slot`, or of the nearest earlier slot with a block (skipped slots have none)."""
    from iq_etl.ingest.sources.rpc.client import SkippedSlot

    for candidate in range(slot, max(slot - look_back, -1), -1):
        try:
            value = rpc.call("getBlockTime", [candidate])
        except SourceError:
            continue
        if isinstance(value, SkippedSlot) or value is None:
            continue
        if isinstance(value, int) and not isinstance(value, bool):
            return dt.datetime.fromtimestamp(value, dt.timezone.utc)
    return None


def default_start_slot(settings: Settings, program_ids: frozenset[str]) -> int:
    """IQ_START_SLOT, else the first slot of the oldest configured generation whose start is known."""
    from iq_etl.settings import ERA_FIRST_SLOTS

    if settings.start_slot is not None:
        return settings.start_slot
    known = {p: ERA_FIRST_SLOTS[p] for p in program_ids if p in ERA_FIRST_SLOTS}
    unknown = sorted(p for p in program_ids if p not in ERA_FIRST_SLOTS)
    if not known:
        raise IQEtlError("follow: no start slot: set IQ_START_SLOT (the first slot of the programs in IQ_PROGRAM_ID "
                         "is not known)")
    if unknown:
        log.warning("follow: the first slot of %d configured program(s) is not known (%s); following from slot %d "
                    "(set IQ_START_SLOT to start earlier)", len(unknown), ", ".join(unknown), min(known.values()))
    return min(known.values())


def follow_chain(settings: Settings, client: Client, *, car_url: str | None = None, rpc_url: str | None = None,
                 start_slot: int | None = None, max_epochs: int = DEFAULT_MAX_EPOCHS,
                 max_rpc_slots: int = DEFAULT_MAX_RPC_SLOTS, extra_program_ids: tuple[str, ...] = (),
                 rpc_options: dict[str, Any] | None = None, threads: int | None = None,
                 progress: bool = False, epoch_available: Callable[[int], bool] | None = None) -> FollowResult:
    """One follow round (module docstring). `epoch_available(epoch)`: whether the archive serves an
    epoch (default: a quick check of the CAR location)."""
    if max_epochs < 0 or max_rpc_slots < 0:
        raise IQEtlError("follow: --max-epochs and --max-rpc-slots must be 0 or more")
    started = time.perf_counter()
    rpc_url = rpc_url or settings.rpc_url
    car_url = car_url or settings.car_url
    if "{epoch}" not in car_url:
        raise IQEtlError(f"follow: the CAR location {car_url!r} has no {{epoch}}: following the chain reads one "
                         "archive per epoch (IQ_CAR_URL / --car-url as a template)")
    filt = InstructionFilter.from_settings(settings, extra_program_ids)
    start = start_slot if start_slot is not None else default_start_slot(settings, filt.program_ids)
    tip, tip_time = chain_tip(rpc_url, rpc_options)
    result = FollowResult(start_slot=start, tip_slot=tip, tip_time=tip_time)
    if tip < start:
        raise IQEtlError(f"follow: the chain tip {tip} is before the start slot {start} (IQ_START_SLOT?)")
    available = epoch_available or _archive_probe(car_url)
    migrate(client, settings.clickhouse_cluster)
    covered = covered_by_any_source(client, filt.program_ids, filt.session_pdas)
    for epoch in range(epoch_of(start), epoch_of(tip) + 1):
        bounds = epoch_bounds(epoch)
        wanted = SlotRange(max(bounds.first_slot, start), min(bounds.last_slot, tip))
        todo = subtract(wanted, covered)
        if not todo:
            continue
        finished = bounds.last_slot <= tip     # the epoch ended: its archive may exist
        if finished and available(epoch):
            result.archive_epochs.append(epoch)
            if len({epoch_of(a) for a, _ in result.car_ranges}) < max_epochs:
                result.car_ranges += [(r.first_slot, r.last_slot) for r in todo]
            else:
                result.left_car_epochs.append(epoch)
        else:
            result.unarchived_epochs.append(epoch)
    # Past the archive's edge (and in the current epoch): RPC, oldest first, bounded.
    edge = max([epoch_bounds(e).last_slot for e in result.archive_epochs] or [start - 1])
    budget = max_rpc_slots
    for epoch in result.unarchived_epochs:
        bounds = epoch_bounds(epoch)
        if bounds.last_slot <= edge:
            log.warning("follow: epoch %d is not served by the archive (%s) but later ones are; its slots are "
                        "left as a gap (read them over RPC with `iq-etl ingest %d --source rpc-blocks`)",
                        epoch, car_url, epoch)
            continue
        for r in subtract(SlotRange(max(bounds.first_slot, start), min(bounds.last_slot, tip)), covered):
            take = min(budget, r.slot_count)
            if take:
                result.rpc_ranges.append((r.first_slot, r.first_slot + take - 1))
                budget -= take
            result.left_rpc_slots += r.slot_count - take
    log.info("follow: tip %d, start %d; %d archived epoch(s) with work (%d this round), %d slot(s) over RPC this "
             "round", tip, start, len(result.archive_epochs), len({epoch_of(a) for a, _ in result.car_ranges}),
             sum(b - a + 1 for a, b in result.rpc_ranges))
    for source, ranges in (("car", result.car_ranges), ("rpc-blocks", result.rpc_ranges)):
        if not ranges:
            continue
        summary = run_ingest(settings, IngestRequest(
            ranges=tuple(SlotRange(a, b) for a, b in ranges), source=source, car_url=car_url, rpc_url=rpc_url,
            extra_program_ids=extra_program_ids, rpc_options=rpc_options or {}, threads=threads, progress=progress),
            client=client)
        _count(result, summary)
    covered = covered_by_any_source(client, filt.program_ids, filt.session_pdas)
    result.frontier_slot = frontier(start, covered)
    if result.frontier_slot is not None:
        from iq_etl.ingest.sources.rpc.client import RpcClient

        with RpcClient(rpc_url, **(rpc_options or {})) as rpc:
            result.frontier_time = block_time(rpc, result.frontier_slot)
    result.seconds = time.perf_counter() - started
    log.info("%s", result.line())
    return result


def lag_verdict(lag_slots: int, max_lag: int | None) -> str | None:
    """The one-line failure when the lag is above IQ_MAX_LAG, else None."""
    if max_lag is None or lag_slots <= max_lag:
        return None
    return (f"the warehouse lags the chain tip by {lag_slots:,} slots, more than IQ_MAX_LAG={max_lag:,}: check that "
            "follow rounds run (schedule, worker), raise --max-rpc-slots / --max-epochs, or use a faster RPC endpoint")


def frontier(start: int, covered: list[SlotRange]) -> int | None:
    """The last slot of the contiguous coverage that begins at or before `start` (None: `start` is not covered)."""
    for r in covered:
        if r.first_slot <= start <= r.last_slot:
            return r.last_slot
    return None


def _count(result: FollowResult, summary: IngestSummary) -> None:
    result.rows_written += summary.rows_written
    result.slots_covered += sum(r["last_slot"] - r["first_slot"] + 1 for r in summary.ranges if r["status"] == "done")
    result.ingests.append({"source": summary.source, "run_id": summary.run_id, "rows_written": summary.rows_written,
                           "incomplete": summary.incomplete})
    if summary.incomplete:
        raise IQEtlError(f"follow: the {summary.source} ingest {summary.run_id} did not finish every sub-range; "
                         "the next round resumes it")


def _archive_probe(car_url: str) -> Callable[[int], bool]:
    """epoch → whether the archive serves it (one quick check each; a host that cannot be reached is an
    error, not "not published")."""
    from iq_etl.ingest.sources.car.source import CarSource

    source = CarSource(car_url)

    def available(epoch: int) -> bool:
        try:
            source.preflight(epoch_bounds(epoch).first_slot if source.is_template else None)
            return True
        except SourceMissing:
            return False

    return available
