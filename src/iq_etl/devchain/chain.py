"""Loading a built development chain back: its manifest, its CAR files, and its blocks (read
through iq-etl's own CAR reader, so whatever uses the chain also exercises that reader)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

from iq_etl.devchain.manifest import INSTRUCTIONS_NAME, Manifest, read_manifest
from iq_etl.errors import SourceError
from iq_etl.solana.model import ChainBlock


def load_manifest(chain_dir) -> Manifest:
    """The chain's manifest.json (SourceError naming the file when missing or malformed)."""
    return read_manifest(Path(chain_dir))


def car_template(chain_dir) -> str:
    """`DIR/{epoch}/epoch-{epoch}.car`: the location template CarSource and IQ_CAR_URL take."""
    return str(Path(chain_dir) / "{epoch}" / "epoch-{epoch}.car")


def chain_car_paths(chain_dir) -> dict[int, Path]:
    """epoch → CAR path for every epoch the chain covers (checked to exist)."""
    root = Path(chain_dir)
    manifest = load_manifest(root)
    out = {}
    for epoch, rel in sorted(manifest.car_files.items(), key=lambda kv: int(kv[0])):
        path = root / rel
        if not path.is_file():
            raise SourceError(f"{path}: CAR file listed in {root / 'manifest.json'} is missing")
        out[int(epoch)] = path
    return out


def iter_chain(chain_dir, first_slot: int | None = None, last_slot: int | None = None, *,
               wanted_keys=None) -> Iterator[ChainBlock]:
    """Blocks of the chain in slot order (skipped slots included as `skipped` blocks when the reader
    reports them), streamed from the CAR files."""
    from iq_etl.ingest.sources.car.source import CarSource

    manifest = load_manifest(chain_dir)
    first = manifest.first_slot if first_slot is None else first_slot
    last = manifest.last_slot if last_slot is None else last_slot
    yield from CarSource(car_template(chain_dir), wanted_keys=wanted_keys).iter_blocks(first, last)


def load_chain(chain_dir) -> list[ChainBlock]:
    """Every block of the chain in memory: fine for demo- and test-sized chains, not for benchmarks."""
    return list(iter_chain(chain_dir))


def iter_expected_instructions(chain_dir) -> Iterator[dict]:
    """The generator's record of every IQ instruction (instructions.jsonl), in chain order:
    slot, tx_index, block_time, signature, tx_ok, ix_index, inner_index (None for top level),
    program_id, accounts, upload_key and `record` (the decode --json shape of what was encoded)."""
    path = Path(chain_dir) / INSTRUCTIONS_NAME
    try:
        f = open(path, encoding="utf-8")
    except FileNotFoundError:
        raise SourceError(f"{path}: missing (run `iq-etl devchain build`)") from None
    with f:
        for lineno, line in enumerate(f, 1):
            try:
                yield json.loads(line)
            except json.JSONDecodeError as exc:
                raise SourceError(f"{path}:{lineno}: not JSON: {exc}") from None
