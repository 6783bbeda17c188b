"""`build_chain`: the deterministic development chain as Old Faithful CAR files plus ground truth.

Layout of DIR:
    {epoch}/epoch-{epoch}.car              one CARv1 per epoch touched (Old Faithful node layout)
    {epoch}/epoch-{epoch}-slot-ranges.raw  432,000 × (offset u64, length u32); zeros = skipped slot
    manifest.json                          chain facts, uploads with expected status, hard cases
    instructions.jsonl                     every IQ instruction encoded, in chain order
    files/<n>.bin                          each upload's original file

Same arguments → byte-identical output: keys, block hashes, block times and every random choice
derive from the seed; nothing reads the clock or depends on dict/set iteration order of unordered
data. Slots are in the IQ era (above 398,615,411), starting by default at the first slot of epoch 923.
"""
from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from iq_etl.devchain.manifest import FORMAT, INSTRUCTIONS_NAME, MANIFEST_NAME, HardCase, Manifest, write_manifest
from iq_etl.errors import IQEtlError
from iq_etl.settings import DEFAULT_PROGRAM_IDS, G1_PROGRAM_ID, G2_PROGRAM_ID, G3_PROGRAM_ID

if TYPE_CHECKING:
    from iq_etl.devchain.txbuild import BuiltTx

# The generator's modules (solders, the protocol encoders) load on first build, so that importing
# this module for its defaults (the CLI does) stays cheap.
CATALOGUE_UPLOADS = 39   # checked against uploads.catalogue.CATALOGUE_UPLOADS in build_chain

SLOTS_PER_EPOCH = 432_000
IQ_ERA_FIRST_SLOT = 398_615_411          # first G3 program transaction (docs/protocol.md §1)
IQ_ERA_FIRST_TIME = 1_770_422_400        # 2026-02-07T00:00:00Z, the day of that slot
DEFAULT_FIRST_SLOT = 923 * SLOTS_PER_EPOCH  # 398,736,000: first slot of epoch 923
DEFAULT_SLOTS = 2400
DEFAULT_SESSIONS = 48
DEFAULT_NOISE_TX_PER_SLOT = 2
DEFAULT_FAR_GAP = 2000                   # slots between the upload window and the far window
DEFAULT_MAX_FRAME_BYTES = 4096           # DataFrame size limit in the CAR: big metadata spans frames
FAR_WINDOW_SLOTS = 50
UPLOAD_RESERVE_SLOTS = 60                # room at the end of the upload window for an upload's span
MIN_SLOTS = 200
SKIP_RATE = 0.02
BIG_META_LOG_LINES = 150
MARKER_NAME = ".iq-etl-devchain"


def block_time_of(slot: int) -> int:
    """Unix time of `slot`: 400 ms per slot from the first IQ-era slot."""
    return IQ_ERA_FIRST_TIME + (slot - IQ_ERA_FIRST_SLOT) * 2 // 5


def _check(first_slot: int, slots: int, sessions: int, noise_tx_per_slot: int, far_gap: int) -> None:
    if first_slot <= IQ_ERA_FIRST_SLOT:
        raise IQEtlError(f"--first-slot {first_slot}: must be above {IQ_ERA_FIRST_SLOT} (the IQ era)")
    if slots < MIN_SLOTS:
        raise IQEtlError(f"--slots {slots}: at least {MIN_SLOTS} are needed for the upload scenarios")
    if sessions < CATALOGUE_UPLOADS:
        raise IQEtlError(f"--sessions {sessions}: at least {CATALOGUE_UPLOADS} (the hard-case catalogue)")
    if noise_tx_per_slot < 0:
        raise IQEtlError(f"--noise-tx-per-slot {noise_tx_per_slot}: must not be negative")
    if far_gap < 1:
        raise IQEtlError(f"far_gap {far_gap}: must be positive")


def _prepare_dir(out: Path) -> None:
    """An empty directory, or one holding a previous (possibly interrupted) development chain, whose
    outputs are removed. A marker file written first tells an interrupted build's folder apart from
    someone else's folder."""
    if out.exists() and not out.is_dir():
        raise IQEtlError(f"--out {out}: exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    entries = list(out.iterdir())
    if entries and not ((out / MANIFEST_NAME).is_file() or (out / MARKER_NAME).is_file()):
        raise IQEtlError(f"--out {out}: not empty and holds no development chain; refusing to overwrite")
    for entry in entries:
        if entry.name in (MANIFEST_NAME, INSTRUCTIONS_NAME):
            entry.unlink()
        elif entry.is_dir() and (entry.name == "files" or entry.name.isdigit()):
            shutil.rmtree(entry)
    (out / MARKER_NAME).write_text("iq-etl development chain (see manifest.json)\n", encoding="utf-8")


def _skipped_slots(rng: random.Random, first: int, last: int, forced: list[int]) -> set[int]:
    """About 2% of slots produce no block (leaders that missed their turn), plus `forced` ones.
    The first and last slot always have a block, so the chain's range is well defined."""
    skipped = {s for s in range(first + 1, last) if rng.random() < SKIP_RATE}
    skipped.update(s for s in forced if first < s < last)
    return skipped


def _far_gap(slots: int, far_gap: int) -> int:
    """The requested gap, shrunk for short chains so the upload window keeps at least 150 slots."""
    return max(1, min(far_gap, slots - FAR_WINDOW_SLOTS - 150 - UPLOAD_RESERVE_SLOTS))


def build_chain(out_dir, *, seed: int = 0, sessions: int = DEFAULT_SESSIONS,
                noise_tx_per_slot: int = DEFAULT_NOISE_TX_PER_SLOT, slots: int = DEFAULT_SLOTS,
                first_slot: int = DEFAULT_FIRST_SLOT, far_gap: int = DEFAULT_FAR_GAP,
                max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> Manifest:
    """Generate the chain into `out_dir` and return its manifest (also written as manifest.json)."""
    from solders.pubkey import Pubkey

    from iq_etl.devchain.car_writer import CarWriter
    from iq_etl.devchain.noise import NoiseGenerator
    from iq_etl.devchain.txbuild import KeyRing
    from iq_etl.devchain.uploads import catalogue as catalogue_mod
    from iq_etl.devchain.uploads.catalogue import CATALOGUE, Catalogue, ordinary_upload
    from iq_etl.devchain.uploads.planner import UploadPlanner
    from iq_etl.devchain.uploads.scenarios import Scenarios
    from iq_etl.devchain.uploads.state import Programs, Timeline

    assert catalogue_mod.CATALOGUE_UPLOADS == CATALOGUE_UPLOADS, "update build.CATALOGUE_UPLOADS"
    _check(first_slot, slots, sessions, noise_tx_per_slot, far_gap)
    out = Path(out_dir)
    _prepare_dir(out)
    files_dir = out / "files"
    files_dir.mkdir()

    keys = KeyRing(seed)
    rng = random.Random(int.from_bytes(keys.bytes_for("chain-rng")[:8], "little"))
    programs = Programs(g1=Pubkey.from_string(G1_PROGRAM_ID), g2=Pubkey.from_string(G2_PROGRAM_ID),
                        g2_legacy=keys.address("program/g2-legacy"), g3=Pubkey.from_string(G3_PROGRAM_ID),
                        router=keys.address("program/router"))
    last_slot = first_slot + slots - 1
    gap = _far_gap(slots, far_gap)
    # A run of three skipped slots early in the upload window, inside g2_out_of_order's span.
    skipped = _skipped_slots(rng, first_slot, last_slot, [first_slot + 6, first_slot + 7, first_slot + 8])
    timeline = Timeline(first_slot, slots, skipped, FAR_WINDOW_SLOTS, gap)

    # 1. Uploads: the catalogue spread over the upload window, then ordinary uploads at random.
    planner = UploadPlanner(seed, keys, programs, timeline, files_dir, out)
    scenarios = Scenarios(planner)
    catalogue = Catalogue(scenarios)
    lo, hi = timeline.main_first, max(timeline.main_first, timeline.main_last - UPLOAD_RESERVE_SLOTS)
    for k, name in enumerate(CATALOGUE):
        getattr(catalogue, name)(lo + (hi - lo) * k // len(CATALOGUE))
    for i in range(sessions - CATALOGUE_UPLOADS):
        ordinary_upload(scenarios, rng.randint(lo, hi), i)

    # 2. Noise specials: transactions that mention IQ program ids without calling them, and one
    #    unrelated transaction with metadata big enough to span DataFrames.
    noise = NoiseGenerator(seed, keys, iq_program_ids=[programs.g2, programs.g3], router=programs.router)
    live = timeline.live
    special_slots = {timeline.at(lo + (hi - lo) // 5): "iq_account_only_v0",
                     timeline.at(lo + (hi - lo) // 2): "iq_account_only_legacy",
                     timeline.at(lo + (hi - lo) * 3 // 4): "big_meta_noise",
                     timeline.at(lo + (hi - lo) * 2 // 5): "iq_undecodable"}

    # 3. Blocks, slot by slot, one CAR writer per epoch.
    writers: dict[int, CarWriter] = {}
    counts = {"transactions": 0, "iq": 0, "iq_failed": 0, "noise": 0, "v0": 0, "legacy": 0,
              "failed": 0, "iq_account_only": 0}
    special_sigs: dict[str, list[tuple[int, str]]] = {}
    blocks_written = 0
    tx_index: dict[str, tuple[int, int]] = {}
    parent = first_slot - 1
    height = first_slot - first_slot // 20          # block heights trail slots (historic skips)
    current = None
    try:
        for slot in live:
            epoch = slot // SLOTS_PER_EPOCH
            if epoch != current:
                if current is not None:
                    writers[current].close()
                writers[epoch] = CarWriter(out / str(epoch) / f"epoch-{epoch}.car", max_frame_bytes=max_frame_bytes)
                current = epoch
            n_noise = 0
            if noise_tx_per_slot:
                n_noise = rng.randint(noise_tx_per_slot - noise_tx_per_slot // 4, noise_tx_per_slot + noise_tx_per_slot // 4)
            txs = noise.block(slot, n_noise)
            special = special_slots.get(slot)
            if special:
                if special == "iq_account_only_v0":
                    extra = noise.swap_v0(slot, 10_000, False, list_iq=True)
                elif special == "iq_account_only_legacy":
                    extra = noise.iq_account_only_legacy(slot, 10_001)
                elif special == "iq_undecodable":
                    extra = noise.iq_unknown_instruction(slot, 10_003)
                else:
                    extra = noise.swap_v0(slot, 10_002, False, big_logs=BIG_META_LOG_LINES)
                special_sigs.setdefault(special, []).append((slot, extra.signature))
                txs.append(extra)
            iq = planner.txs_by_slot.get(slot, [])
            block = _interleave(rng, txs, iq)
            for i, tx in enumerate(block):
                tx_index[tx.signature] = (slot, i)
                counts["v0" if tx.version == "v0" else "legacy"] += 1
                counts["failed"] += tx.meta.status == "failed"
            counts["iq"] += len(iq)
            counts["iq_failed"] += sum(t.meta.status == "failed" for t in iq)
            counts["noise"] += len(block) - len(iq)
            counts["transactions"] += len(block)
            blocks_written += 1
            writers[epoch].add_slot(slot, parent, block_time_of(slot), height, [(t.wire, t.meta) for t in block])
            parent = slot
            height += 1
        writers[current].close()
    except BaseException as exc:
        if current is not None:
            writers[current].__exit__(type(exc), exc, exc.__traceback__)   # release the half-written file
        raise
    counts["iq_account_only"] = len(special_sigs.get("iq_account_only_v0", [])) + len(
        special_sigs.get("iq_account_only_legacy", []))
    for kind, n in sorted(noise.counts.items()):
        counts[f"noise_{kind}"] = n
    leftover = set(planner.txs_by_slot) - set(live)
    if leftover:
        raise AssertionError(f"IQ transactions placed in skipped or out-of-range slots: {sorted(leftover)[:5]}")

    # 4. Ground truth: instructions in chain order, hard cases, the manifest.
    rows = sorted(planner.rows, key=lambda r: (tx_index[r["signature"]], r["ix_index"], r["inner_index"] or 0))
    with open(out / INSTRUCTIONS_NAME, "w", encoding="utf-8") as f:
        for row in rows:
            slot, index = tx_index[row["signature"]]
            line = {"slot": slot, "tx_index": index, "block_time": block_time_of(slot), **row}
            f.write(json.dumps(line, ensure_ascii=True, sort_keys=False) + "\n")

    hard_cases = planner.hard_case_index()
    account_only = special_sigs.get("iq_account_only_v0", []) + special_sigs.get("iq_account_only_legacy", [])
    hard_cases.append(HardCase(
        name="iq_program_as_account_only",
        description="unrelated transactions that list IQ program ids as plain accounts (one via a lookup "
                    "table): a key pre-filter matches them, but they hold no IQ instruction",
        slots=[s for s, _ in account_only], signatures=[sig for _, sig in account_only]))
    undecodable = special_sigs.get("iq_undecodable", [])
    hard_cases.append(HardCase(
        name="undecodable_iq_instruction",
        description="a successful G3-program instruction outside the upload protocol (unknown tag): "
                    "ingest keeps it in iq.undecoded_instructions with the reason",
        slots=[s for s, _ in undecodable], signatures=[sig for _, sig in undecodable]))
    for case in hard_cases:
        if case.name == "meta_spans_dataframes":
            for s, sig in special_sigs.get("big_meta_noise", []):
                case.slots.append(s)
                case.signatures.append(sig)
    hard_cases.append(HardCase(name="skipped_slots", description="slots without a block (all-zero slot-ranges "
                               "records); some lie inside upload spans", slots=sorted(skipped)))
    epochs = sorted(writers)
    main_uploads = [u for u in planner.uploads if "far_slot_window" not in u.hard_cases
                    and "chunk_far_from_siblings" not in u.hard_cases and u.last_slot is not None]
    manifest = Manifest(
        format=FORMAT, seed=seed,
        parameters={"sessions": sessions, "noise_tx_per_slot": noise_tx_per_slot, "slots": slots,
                    "first_slot": first_slot, "far_gap": gap, "max_frame_bytes": max_frame_bytes},
        first_slot=first_slot, last_slot=last_slot, epochs=epochs,
        car_files={str(e): f"{e}/epoch-{e}.car" for e in epochs},
        slot_range_files={str(e): f"{e}/epoch-{e}-slot-ranges.raw" for e in epochs},
        block_count=blocks_written, skipped_slots=sorted(skipped), block_time_first=block_time_of(first_slot),
        tx_counts=counts, program_ids=programs.by_generation(),
        extra_program_ids=[p for p in programs.by_generation().values() if p not in DEFAULT_PROGRAM_IDS],
        other_program_ids={"router": str(programs.router), "dex": str(noise.dex)},
        lookup_tables={**planner.lookup_tables, **noise.lookup_tables()},
        hard_cases=hard_cases, uploads=planner.uploads,
    )
    manifest.parameters["upload_window"] = [timeline.main_first, max(u.last_slot for u in main_uploads)]
    manifest.parameters["far_window"] = [timeline.far_first, last_slot]
    write_manifest(out, manifest)
    return manifest


def _interleave(rng: random.Random, noise: list["BuiltTx"], iq: list["BuiltTx"]) -> list["BuiltTx"]:
    """IQ transactions at random positions among the noise, keeping each list's own order."""
    if not iq:
        return noise
    if not noise:
        return list(iq)
    positions = sorted(rng.randint(0, len(noise)) for _ in iq)
    out: list["BuiltTx"] = []
    j = 0
    for i, tx in enumerate(noise):
        while j < len(iq) and positions[j] == i:
            out.append(iq[j])
            j += 1
        out.append(tx)
    out.extend(iq[j:])
    return out
