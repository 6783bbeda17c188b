"""`iq-etl demo` (what `make demo` runs): the main job end to end on a fresh machine, offline.

1. Build a small development chain under `<IQ_ETL_HOME>/devchain` (real signed transactions of every
   IQ generation, written as Old Faithful CAR files with their slot index), or reuse the one there
   if it was built with the same seed and size.
2. Run `pipeline_flow` (a real Prefect flow run on a temporary local API): ingest the chain's slots
   from its CAR files into the embedded warehouse (the default DSN), `dbt build`, export every
   complete upload to `file://./exports`, and also to the reader backend when IQ_READER_BASE_URL
   points at a loopback address (the demo never talks to the internet).
3. Check the exported files against the chain's manifest (sha256 of the original files), print the
   status table, and say where the files and the warehouse are and how to query them.

A second run ingests nothing new (resume), rebuilds the models and exports nothing again.
"""
from __future__ import annotations

import hashlib
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

from iq_etl.errors import IQEtlError
from iq_etl.settings import DEFAULT_READER_BASE_URL, Settings

DEFAULT_SEED = 7
DEFAULT_SESSIONS = 48        # the development chain's default: its 39 hard cases plus ordinary uploads
EXPORT_URL = "file://./exports"
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


@dataclass
class DemoResult:
    chain_dir: Path
    built: bool                         # False when an existing chain was reused
    manifest: Any
    targets: list[str]
    flow_result: Any                    # the pipeline's PipelineResult (iq_etl.orchestration.results)
    exports_dir: Path
    verified: list[str] = field(default_factory=list)      # upload keys whose exported file matches
    mismatched: list[str] = field(default_factory=list)    # exported, but different bytes
    not_exported: list[str] = field(default_factory=list)  # complete in the manifest, no file
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.mismatched and not self.not_exported


def loopback_reader(settings: Settings) -> str | None:
    """The reader backend URL if IQ_READER_BASE_URL was set to a loopback address, else None."""
    if settings.reader_base_url == DEFAULT_READER_BASE_URL:
        return None
    host = urlsplit(settings.reader_base_url).hostname or ""
    return settings.reader_url if host in LOOPBACK_HOSTS else None


def ensure_chain(chain_dir: Path, seed: int, sessions: int, say: Callable[[str], None]) -> tuple[Any, bool]:
    """The development chain in `chain_dir`: reused when its manifest has the same seed and size."""
    from iq_etl.devchain.build import build_chain
    from iq_etl.devchain.chain import load_manifest

    if (chain_dir / "manifest.json").is_file():
        try:
            manifest = load_manifest(chain_dir)
        except IQEtlError as exc:
            say(f"rebuilding the development chain: {exc}")
        else:
            same = manifest.seed == seed and manifest.parameters.get("sessions") == sessions
            files_there = all((chain_dir / rel).is_file() for rel in manifest.car_files.values())
            if same and files_there:
                return manifest, False
            say(f"rebuilding the development chain in {chain_dir} (seed/size changed or files missing)")
    return build_chain(chain_dir, seed=seed, sessions=sessions), True


def verify_exports(manifest: Any, exports_dir: Path) -> tuple[list[str], list[str], list[str]]:
    """Compare each manifest upload expected complete with its exported file: the bytes the gateway
    would serve (`file_sha256`), which are the uploader's original file except where the gateway's rule
    keeps the text (a short base64 upload stays text; the manifest's `short_base64_not_decoded`)."""
    from iq_etl.export.file_target import METADATA_NAME, session_dirname

    verified: list[str] = []
    mismatched: list[str] = []
    missing: list[str] = []
    for upload in manifest.uploads:
        if upload.expected_status != "complete":
            continue
        folder = exports_dir / session_dirname(upload.upload_key)
        files = [p for p in folder.iterdir() if p.is_file() and p.name != METADATA_NAME
                 and not p.name.startswith(".tmp-")] if folder.is_dir() else []
        if len(files) != 1:
            missing.append(upload.upload_key)
            continue
        digest = hashlib.sha256(files[0].read_bytes()).hexdigest()
        (verified if digest == upload.file_sha256 else mismatched).append(upload.upload_key)
    return verified, mismatched, missing


def run_demo(settings: Settings, seed: int = DEFAULT_SEED, sessions: int = DEFAULT_SESSIONS,
             say: Callable[[str], None] = print) -> DemoResult:
    """Build or reuse the chain, run the pipeline flow over it, verify the exports."""
    from iq_etl.devchain.chain import car_template
    from iq_etl.orchestration.flows import pipeline_flow
    from iq_etl.orchestration.params import ExportParams, IngestParams

    seconds: dict[str, float] = {}
    started = time.perf_counter()
    chain_dir = (settings.home / "devchain").resolve()
    say(f"development chain: {chain_dir}")
    manifest, built = ensure_chain(chain_dir, seed, sessions, say)
    seconds["chain"] = time.perf_counter() - started
    say(f"  {'built' if built else 'reused'}: slots {manifest.first_slot}:{manifest.last_slot}, "
        f"{manifest.tx_counts.get('transactions', 0):,} transactions, {len(manifest.uploads)} uploads "
        f"({seconds['chain']:.1f}s)")

    targets = [EXPORT_URL]
    reader = loopback_reader(settings)
    if reader:
        targets.append(reader)
    elif settings.reader_base_url != DEFAULT_READER_BASE_URL:
        say(f"  not exporting to {settings.reader_base_url}: the demo only uses loopback reader backends")
    say(f"running pipeline_flow: ingest (CAR) → transform (dbt build) → export to {', '.join(targets)}")
    t0 = time.perf_counter()
    result = pipeline_flow(
        slot_spec=f"{manifest.first_slot}:{manifest.last_slot}",
        ingest=IngestParams(source="car", car_url=car_template(chain_dir),
                            extra_program_ids=list(manifest.extra_program_ids) or None),
        export=ExportParams(targets=targets), progress=sys.stderr.isatty(),
    )
    seconds["pipeline"] = time.perf_counter() - t0

    from iq_etl.export.file_target import resolve_file_url

    exports_dir = resolve_file_url(EXPORT_URL)
    verified, mismatched, missing = verify_exports(manifest, exports_dir)
    seconds["total"] = time.perf_counter() - started
    return DemoResult(chain_dir=chain_dir, built=built, manifest=manifest, targets=targets, flow_result=result,
                      exports_dir=exports_dir, verified=verified, mismatched=mismatched, not_exported=missing,
                      seconds=seconds)
