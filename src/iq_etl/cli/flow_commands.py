"""What the commands that run Prefect flows share (`run`, `ingest`'s options, `backfill`, `reconcile`,
`demo`, `serve`): their ingest / Dask / export options, declared once; the number checks made before
a flow starts; Prefect's process set-up; running a flow in this process; printing its result."""
from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from iq_etl.errors import IQEtlError
from iq_etl.ingest.request import DEFAULTS, SOURCES, IngestParams
from iq_etl.settings import Settings

if TYPE_CHECKING:
    from iq_etl.orchestration.params import ExportParams
    from iq_etl.orchestration.results import PipelineResult


def add_ingest_arguments(p: argparse.ArgumentParser, sources: tuple[str, ...] = SOURCES) -> None:
    p.add_argument("slot_spec", nargs="?", metavar="SLOT_SPEC",
                   help="S:E (inclusive slots), N (an epoch) or A-B (inclusive epochs); "
                        "omit with --session-pda to discover the window")
    p.add_argument("--source", choices=sources, default=DEFAULTS.source,
                   help="where to read: " + ", ".join(sources) + (" (follow: one round of following the chain, "
                   "see `iq-etl follow --help`)" if "follow" in sources else ""))
    p.add_argument("--car-url", metavar="TEMPLATE", help="CAR path/URL, may contain {epoch} (default IQ_CAR_URL or the Old Faithful bucket)")
    p.add_argument("--rpc-url", help="Solana JSON-RPC URL (default IQ_RPC_URL / SOLANA_RPC_URL / mainnet)")
    p.add_argument("--session-pda", metavar="A,B", help="only these session accounts; without SLOT_SPEC their "
                   "window is discovered over RPC (default IQ_SESSION_PDA_LIST)")
    p.add_argument("--slot-padding", type=int, default=DEFAULTS.slot_padding, help="slots added on both sides of a discovered window")
    p.add_argument("--max-signature-pages", type=int, default=DEFAULTS.max_signature_pages, help="getSignaturesForAddress pages per PDA (1000 each)")
    p.add_argument("--threads", type=int, default=None, help="ingest workers (default JETSTREAMER_THREADS or 1)")
    p.add_argument("--program-id", action="append", default=[], metavar="ID",
                   help="also ingest this program id (e.g. a development chain's extra program); repeatable")
    p.add_argument("--resume", action=argparse.BooleanOptionalAction, default=DEFAULTS.resume,
                   help="skip sub-ranges an earlier run completed (default on)")


def add_dask_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dask-address", metavar="tcp://HOST:PORT", default=None,
                   help="scan sub-ranges as Prefect tasks on this Dask scheduler (default IQ_DASK_ADDRESS); "
                        "see docs/SCALING.md")
    p.add_argument("--dask-workers", type=int, default=None, metavar="N",
                   help="without an address: a local Dask cluster of N worker processes for this run")


def add_export_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target", action="append", default=[], metavar="URL",
                   help="export target: http(s):// endpoint or file://DIR; repeatable (default: the reader backend)")
    p.add_argument("--export-concurrency", type=int, default=None, help="uploads sent at once per target")
    p.add_argument("--lock-timeout", type=float, default=3600.0,
                   help="seconds to wait for another run holding the warehouse (default 3600)")
    p.add_argument("--json", action="store_true", help="print the run's result as JSON")


def split_pdas(text: str | None) -> list[str]:
    return [p.strip() for p in (text or "").split(",") if p.strip()]


def ingest_params(args: argparse.Namespace) -> IngestParams:
    """The flows' `ingest` parameter from the options a command declared (the others keep their defaults)."""
    values: dict[str, Any] = {name: getattr(args, name) for name in IngestParams.model_fields
                              if getattr(args, name, None) is not None}
    values["session_pdas"] = split_pdas(getattr(args, "session_pda", None)) or None
    values["extra_program_ids"] = list(getattr(args, "program_id", None) or []) or None
    return IngestParams(**values)


def export_params(args: argparse.Namespace) -> ExportParams:
    from iq_etl.orchestration.params import ExportParams

    return ExportParams(targets=list(args.target) or None, concurrency=args.export_concurrency,
                        dry_run=bool(getattr(args, "dry_run", False)))


def check_numbers(args: argparse.Namespace) -> None:
    """Reject bad numbers before a flow run starts (one clear line, no flow traceback)."""
    for name, minimum in (("slot_padding", 0), ("max_signature_pages", 1), ("threads", 1),
                          ("export_concurrency", 1), ("lock_timeout", 0), ("dask_workers", 1),
                          ("subrange_slots", 1), ("max_epochs", 0), ("max_rpc_slots", 0)):
        value = getattr(args, name, None)
        if value is not None and value < minimum:
            raise IQEtlError(f"--{name.replace('_', '-')} must be at least {minimum}, got {value}")
    if getattr(args, "dask_address", None):
        from iq_etl.settings import check_dask_address

        check_dask_address(args.dask_address)
    if getattr(args, "slot_spec", None):
        from iq_etl.solana.slots import parse_slot_spec

        parse_slot_spec(args.slot_spec)


def prepare_prefect(settings: Settings, command: str | None = None) -> None:
    """Prefect's defaults, then (with `command`, for commands running flows in this process) the
    interrupt handling and the temporary API server of iq_etl.orchestration.shutdown: Ctrl-C / SIGTERM
    end the run in order with one line, and nothing this process starts outlives it."""
    from iq_etl.orchestration import prefect_env
    prefect_env.configure(settings.home)
    prefect_env.quiet_console()
    import prefect  # noqa: F401 - sets up Prefect's console handlers, which then take our log format

    from iq_etl.cli.main import apply_log_format
    apply_log_format()
    if command:
        from iq_etl.orchestration import shutdown

        shutdown.install_interrupt_handlers(command)
        shutdown.own_ephemeral_api()


def run_flow(flow_fn: Any, **parameters: Any) -> tuple[Any, str | None]:
    """Run a flow in this process; (its result, the failure message when deliveries failed). Other
    failures raise as they would from a plain call."""
    from iq_etl.errors import DeliveryFailed
    from iq_etl.orchestration.shutdown import raise_if_interrupted

    state = flow_fn(**parameters, return_state=True)
    raise_if_interrupted()
    data = state.result(raise_on_failure=False)
    if isinstance(data, DeliveryFailed):
        return data.result, str(data)
    if isinstance(data, BaseException):
        raise data
    return data, None


def print_result(result: PipelineResult, as_json: bool) -> None:
    from iq_etl.output import jsonable

    if as_json:
        json.dump(jsonable(result.to_json()), sys.stdout, indent=2)
        print()
        return
    if result.follow is not None:
        print(result.follow.line())
    ing = result.ingest
    if ing is not None:
        print(f"ingest: {ing.transactions_seen:,} transactions, {ing.matches:,} IQ matches, "
              f"{ing.rows_written:,} rows written, {ing.undecoded:,} undecoded "
              f"({ing.skipped_ranges} sub-ranges already done)")
    elif result.follow is None:
        print("ingest: skipped (no slot spec and no session PDAs)")
    print(f"transform: {'ok' if result.transform.success else 'FAILED'}")
    for ex in result.export:
        print(f"export → {ex.target}: {ex.delivered} delivered, {ex.failed} failed, {ex.refused} refused "
              f"(of {ex.selected} waiting)")
    if result.status:
        from iq_etl.status import print_status

        print_status(result.status)
