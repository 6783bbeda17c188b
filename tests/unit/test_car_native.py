"""The compiled section walker (`IQ_SCANNER=native`) against the pure-Python walk (`python`): the same
candidates, blocks and rows on every test chain, and the same SourceError (message included) on
damaged input; random and mutated sections never crash it. Plus the lookup-table cache both share."""
from __future__ import annotations

import random
import shutil
import sysconfig
from pathlib import Path

import pytest
from solders.pubkey import Pubkey

from iq_etl.errors import SettingsError, SourceError
from iq_etl.ingest.sources.car import prefilter, scanner
from iq_etl.ingest.sources.car.reader import CarFile
from iq_etl.ingest.sources.car.source import CarSource
from tests.support.car_sections import sections as car_sections
from tests.support.synthetic_car import PROGRAM_KEY, build_synthetic_car

SCANNERS = ["python", pytest.param("native", marks=pytest.mark.skipif(
    not scanner.native_available(), reason=f"compiled walker not built: {scanner.NATIVE_MISSING}"))]
VOTE = bytes(Pubkey.from_string("Vote111111111111111111111111111111111111111"))
SYSTEM = bytes(32)
EPOCH = 6


def _has_compiler() -> bool:
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    include = Path(sysconfig.get_paths()["include"]) / "Python.h"
    return bool(shutil.which(cc) or shutil.which("gcc")) and include.is_file()


def test_native_walker_is_built_where_a_compiler_exists():
    """CI installs with gcc and the Python headers: there the compiled walker must exist, or the
    equivalence tests below would silently test the Python walk twice."""
    if not _has_compiler():
        pytest.skip("no C compiler or Python headers here: the pure-Python reader is the fallback")
    assert scanner.native_available(), f"compiled walker missing although a compiler exists: {scanner.NATIVE_MISSING}"
    assert scanner.resolve("auto") == "native"


def test_scanner_setting(monkeypatch):
    monkeypatch.setenv("IQ_SCANNER", "python")
    assert CarFile("x.car", wanted_keys=[PROGRAM_KEY]).scanner_used == "python"
    monkeypatch.setenv("IQ_SCANNER", "fast")
    with pytest.raises(SettingsError, match="IQ_SCANNER='fast'"):
        scanner.resolve()
    monkeypatch.setattr(scanner, "_native_walk", None)
    monkeypatch.setenv("IQ_SCANNER", "native")
    with pytest.raises(SettingsError, match="IQ_SCANNER=native: the compiled CAR walker is not built"):
        scanner.resolve()
    monkeypatch.setenv("IQ_SCANNER", "auto")
    assert scanner.resolve() == "python"


def test_native_covers_only_the_fast_mode(monkeypatch):
    if not scanner.native_available():
        pytest.skip("compiled walker not built")
    assert CarFile("x.car", wanted_keys=[PROGRAM_KEY], scanner="native").scanner_used == "native"
    assert CarFile("x.car", wanted_keys=None, scanner="native").scanner_used == "python"
    assert CarFile("x.car", wanted_keys=[PROGRAM_KEY], scanner="native", verify_cids=True).scanner_used == "python"
    many = [PROGRAM_KEY] + [bytes([i]) * 32 for i in range(1, 20)]
    assert CarFile("x.car", wanted_keys=many, scanner="native").scanner_used == "python"


# --- equivalence ------------------------------------------------------------------------------------

def _outcome(location: str, keys, first: int, last: int, which: str, **kw):
    """Everything a scan yields (blocks, per-block counts, candidates' signatures, index and
    metadata), or the error it raised (type and message), for one scanner. Starts with a cold cache."""
    prefilter.reset_lookup_caches()
    out: list = []
    source = CarSource(location, wanted_keys=keys, **kw)
    try:
        for car_block in _blocks(source, first, last, which):
            out.append((car_block.slot, car_block.skipped, car_block.parent_slot, car_block.block_time,
                        car_block.transactions_seen,
                        [(t.signature, t.index, t.meta.status, t.meta.err, tuple(t.meta.loaded_writable),
                          tuple(t.meta.loaded_readonly), t.account_keys()) for t in car_block.transactions]))
    except SourceError as exc:
        out.append((type(exc).__name__, str(exc)))
    return out


def _blocks(source: CarSource, first: int, last: int, which: str):
    import os

    old = os.environ.get("IQ_SCANNER")
    os.environ["IQ_SCANNER"] = which
    try:
        yield from source.iter_blocks(first, last)
    finally:
        if old is None:
            os.environ.pop("IQ_SCANNER", None)
        else:
            os.environ["IQ_SCANNER"] = old


def _same_on_both(location, keys, first, last, **kw):
    py = _outcome(location, keys, first, last, "python", **kw)
    if scanner.native_available():
        nat = _outcome(location, keys, first, last, "native", **kw)
        assert nat == py
    return py


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    chain = build_synthetic_car(root, 3000, epoch=EPOCH, tx_per_slot=60, wanted_every=20, v0_share=0.4)
    return root, chain


@pytest.fixture(scope="module")
def devchain(tmp_path_factory):
    from iq_etl.devchain.build import build_chain

    chain_dir = tmp_path_factory.mktemp("devchain") / "chain"
    return chain_dir, build_chain(chain_dir, seed=3)


def test_synthetic_chain_same_candidates(synthetic):
    root, chain = synthetic
    out = _same_on_both(str(root / "{epoch}" / "epoch-{epoch}.car"), [PROGRAM_KEY], chain.first_slot, chain.last_slot)
    kept = [c[0] for block in out for c in block[5]]
    assert kept == chain.wanted_signatures
    assert sum(block[4] for block in out) == chain.transactions


def test_devchain_same_candidates_and_rows(devchain):
    from iq_etl.devchain.chain import car_template

    chain_dir, manifest = devchain
    keys = [bytes(Pubkey.from_string(p)) for p in manifest.all_program_ids()]
    out = _same_on_both(car_template(chain_dir), keys, manifest.first_slot, manifest.last_slot)
    assert sum(len(block[5]) for block in out) > 50
    stats = prefilter.lookup_cache(keys).stats()
    assert stats["v0_checked"] > 0 and stats["hit_rate"] > 0.5, stats


@pytest.mark.parametrize("keys", [[VOTE], [SYSTEM], [VOTE, SYSTEM], [PROGRAM_KEY]])
@pytest.mark.parametrize("name", ["epoch-0-1.car", "epoch-0-2.car"])
def test_real_fixtures_same_candidates(fixtures_dir, name, keys):
    first = 0 if name.endswith("1.car") else 10
    out = _same_on_both(str(fixtures_dir / name), keys, first, first + 9)
    if VOTE in keys:  # epoch 0 is votes only
        assert any(block[5] for block in out)


def test_lookup_cache_learns_once_per_table(synthetic):
    """Every v0 transaction is checked; a (table, index) seen once is answered from the cache later."""
    root, chain = synthetic
    _outcome(str(root / "{epoch}" / "epoch-{epoch}.car"), [PROGRAM_KEY], chain.first_slot, chain.last_slot, "python")
    stats = prefilter.lookup_cache([PROGRAM_KEY]).stats()
    # the synthetic chain draws a new table for every transaction: all misses, all learned
    assert stats["v0_checked"] > 500 and stats["metadata_decompressed"] == stats["v0_checked"]
    assert stats["tables"] == stats["learned_from"]


# --- damaged input: the same errors ---------------------------------------------------------------

def _damaged_copies(data: bytes, rnd: random.Random, count: int):
    secs = car_sections(data)
    for i in range(count):
        how = i % 5
        if how == 0:  # truncated anywhere
            yield data[:rnd.randrange(1, len(data))]
        elif how == 1:  # truncated at a section boundary
            yield data[:secs[rnd.randrange(1, len(secs))][0]]
        elif how == 2:  # random bytes flipped inside a section's node
            out = bytearray(data)
            _, _, node, end = secs[rnd.randrange(len(secs))]
            for _ in range(rnd.randrange(1, 4)):
                if end > node:
                    out[rnd.randrange(node, end)] = rnd.randrange(256)
            yield bytes(out)
        elif how == 3:  # a section length changed
            out = bytearray(data)
            off = secs[rnd.randrange(len(secs))][0]
            out[off] = rnd.randrange(256)
            yield bytes(out)
        else:  # a run of random bytes over the data
            out = bytearray(data)
            at = rnd.randrange(len(data))
            chunk = rnd.randbytes(rnd.randrange(1, 64))
            out[at:at + len(chunk)] = chunk
            yield bytes(out[:len(data)])


@pytest.mark.parametrize("name", ["epoch-0-1.car"])
def test_damaged_real_fixture_same_errors(fixtures_dir, tmp_path, name):
    data = (fixtures_dir / name).read_bytes()
    path = tmp_path / name
    rnd = random.Random(15)
    errors = 0
    for damaged in _damaged_copies(data, rnd, 60):
        path.write_bytes(damaged)
        out = _same_on_both(str(path), [VOTE, SYSTEM], 0, 9)
        errors += bool(out) and out[-1][0] in ("SourceError", "IncompleteRange")
    assert errors > 20


def test_damaged_synthetic_chain_same_errors(tmp_path):
    """Mutations of a chain with v0 lookups, multi-signature and failed transactions: whatever the
    damage, both walkers give the same blocks, candidates and error message."""
    chain = build_synthetic_car(tmp_path / "src", 400, epoch=EPOCH, tx_per_slot=40, wanted_every=7, v0_share=0.5,
                                index=False)
    data = chain.car_path.read_bytes()
    path = tmp_path / str(EPOCH) / f"epoch-{EPOCH}.car"
    path.parent.mkdir(parents=True)
    rnd = random.Random(4)
    for damaged in _damaged_copies(data, rnd, 80):
        path.write_bytes(damaged)
        _same_on_both(str(path), [PROGRAM_KEY], chain.first_slot, chain.last_slot)


# --- the compiled walker alone: never crashes on any bytes -----------------------------------------

@pytest.mark.skipif(not scanner.native_available(), reason="compiled walker not built")
def test_walker_fuzz_random_and_mutated_buffers(fixtures_dir, tmp_path):
    walk = scanner.native_walk()
    assert walk is not None
    rnd = random.Random(2026)
    chain = build_synthetic_car(tmp_path, 300, epoch=EPOCH, tx_per_slot=30, wanted_every=9, v0_share=0.5)
    samples = [chain.car_path.read_bytes(), (fixtures_dir / "epoch-0-1.car").read_bytes()]
    keys = PROGRAM_KEY + VOTE
    tables = {rnd.randbytes(32): bytearray(rnd.choice([0, 1, 2]) for _ in range(256)) for _ in range(4)}
    tables[b"\x07" * 32] = bytearray(b"\x01" * 256)
    tables[b"\x08" * 32] = bytearray(3)  # a malformed entry is "not known", never a crash
    for i in range(3000):
        kind = i % 3
        if kind == 0:
            buf = bytearray(rnd.randbytes(rnd.randrange(0, 600)))
        else:
            src = rnd.choice(samples)
            start = rnd.randrange(0, len(src) - 1)
            buf = bytearray(src[start:start + rnd.randrange(1, 4000)])
            for _ in range(rnd.randrange(0, 8)):
                if buf:
                    buf[rnd.randrange(len(buf))] = rnd.randrange(256)
        n = rnd.randrange(0, len(buf) + 1) if rnd.random() < 0.3 else len(buf)
        pos = rnd.randrange(0, n + 1) if n else 0
        new_pos, seen, checks, maybe_tx = walk(buf, pos, n, keys, tables)
        assert pos <= new_pos <= max(pos, n) and seen >= 0 and checks >= 0 and maybe_tx in (0, 1)
    with pytest.raises(ValueError):
        walk(bytearray(10), 0, 10, b"short", {})
    assert walk(bytearray(10), 0, 99, keys, {})[0] <= 10  # n past the buffer is clamped


@pytest.mark.skipif(not scanner.native_available(), reason="compiled walker not built")
def test_native_crc64_matches_python():
    from iq_etl.ingest.sources.car import format as car_format

    rnd = random.Random(64)
    for size in (0, 1, 7, 4096, 100_003):
        data = rnd.randbytes(size)
        assert car_format._crc64_native(data) == car_format._crc64_python(data)
    assert car_format.crc64_iso(b"123456789") == 0xB90956C775A41001  # the CRC-64/GO-ISO check value


# --- the slot-ranges index in one pass ----------------------------------------------------------------

def test_slot_span_matches_the_per_slot_records(synthetic):
    from iq_etl.ingest.sources.car.format import parse_slot_ranges, slot_span

    root, chain = synthetic
    car = CarFile(str(chain.car_path))
    lo = EPOCH * 432_000
    for first, last in [(chain.first_slot, chain.last_slot), (lo, lo + 431_999), (chain.first_slot + 3, chain.first_slot + 9),
                        (chain.last_slot + 5, chain.last_slot + 50)]:
        records = car.slot_ranges(first, last)
        span = car.slot_span(first, last)
        present = [(s, off, ln) for s, off, ln in records if ln]
        assert span.first_slot == records[0][0] and span.last_slot == records[-1][0]
        assert span.present == len(present)
        if present:
            assert (span.start, span.end, span.last_present) == (
                min(off for _, off, _ in present), max(off + ln for _, off, ln in present), present[-1][0])
        else:
            assert span.last_present is None
    assert slot_span(b"", 7) == (7, 6, 0, 0, None, 0)
    assert parse_slot_ranges(b"", 7) == []
    with pytest.raises(ValueError, match="12-byte records"):
        slot_span(b"\0" * 13, 0)
