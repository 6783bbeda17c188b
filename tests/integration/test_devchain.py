"""The development chain generator: determinism, real Solana encodings read back through the CAR
reader and an independent one (libipld), every IQ instruction decoding to what was encoded, and a
manifest whose ground truth matches the chain's content."""
from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import libipld
import pytest
from solders.message import MessageV0
from solders.pubkey import Pubkey
from solders.signature import Signature

from iq_etl.devchain.build import CATALOGUE_UPLOADS, DEFAULT_FAR_GAP, SLOTS_PER_EPOCH, build_chain
from iq_etl.devchain.chain import (
    car_template,
    chain_car_paths,
    iter_chain,
    iter_expected_instructions,
    load_chain,
    load_manifest,
)
from iq_etl.devchain.manifest import COMPLETE, STATUSES, gateway_file_bytes
from iq_etl.devchain.uploads.state import HARD_CASES
from iq_etl.errors import IQEtlError, SourceError
from iq_etl.ingest.sources.car.format import SLOT_RANGE_RECORD
from iq_etl.protocol import decode
from iq_etl.solana.model import TX_FAILED, TX_OK

REPO = Path(__file__).resolve().parents[2]
# Small but complete: the whole hard-case catalogue, one noise transaction per slot, the default
# 2,400 slots (so the far window really is 2,000 slots away).
SMALL = dict(sessions=CATALOGUE_UPLOADS + 3, noise_tx_per_slot=1)


@pytest.fixture(scope="module")
def chain_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("devchain") / "chain"
    build_chain(out, seed=7, **SMALL)
    return out


@pytest.fixture(scope="module")
def manifest(chain_dir):
    return load_manifest(chain_dir)


@pytest.fixture(scope="module")
def blocks(chain_dir):
    return load_chain(chain_dir)


@pytest.fixture(scope="module")
def txs_by_sig(blocks):
    return {t.signature: t for b in blocks for t in b.transactions}


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# --- determinism --------------------------------------------------------------------------------

def test_same_seed_gives_identical_bytes_and_another_seed_differs(chain_dir, tmp_path):
    # Rebuilt in another process with another hash seed: no set or dict-order surprises either.
    subprocess.run([sys.executable, "-m", "iq_etl.cli.main", "devchain", "build", "--out", str(tmp_path / "again"),
                    "--seed", "7", "--sessions", str(SMALL["sessions"]),
                    "--noise-tx-per-slot", str(SMALL["noise_tx_per_slot"])],
                   check=True, capture_output=True, cwd=REPO, env={**os.environ, "PYTHONHASHSEED": "12345"})
    first, again = _tree(chain_dir), _tree(tmp_path / "again")
    assert sorted(first) == sorted(again)
    assert [name for name in first if first[name] != again[name]] == []

    build_chain(tmp_path / "other", seed=8, **SMALL)
    other = _tree(tmp_path / "other")
    car = "923/epoch-923.car"
    assert other[car] != first[car]
    assert other["manifest.json"] != first["manifest.json"]


def test_rebuild_replaces_a_previous_chain_but_refuses_a_foreign_folder(tmp_path):
    out = tmp_path / "c"
    build_chain(out, seed=1, sessions=CATALOGUE_UPLOADS, noise_tx_per_slot=0, slots=300)
    build_chain(out, seed=1, sessions=CATALOGUE_UPLOADS, noise_tx_per_slot=0, slots=300)
    assert load_manifest(out).seed == 1
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(IQEtlError, match="refusing to overwrite"):
        build_chain(foreign, seed=1)
    assert (foreign / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("kwargs, message", [
    (dict(first_slot=398_000_000), "IQ era"),
    (dict(sessions=3), "--sessions"),
    (dict(slots=50), "--slots"),
    (dict(noise_tx_per_slot=-1), "--noise-tx-per-slot"),
])
def test_bad_parameters_are_clear_errors(tmp_path, kwargs, message):
    with pytest.raises(IQEtlError, match=message):
        build_chain(tmp_path / "x", **kwargs)


# --- the CAR files read back --------------------------------------------------------------------

def test_blocks_read_back_through_the_car_reader(manifest, blocks):
    produced = [b for b in blocks if not b.skipped]
    live = [s for s in range(manifest.first_slot, manifest.last_slot + 1) if s not in set(manifest.skipped_slots)]
    assert [b.slot for b in produced] == live
    assert len(produced) == manifest.block_count
    assert sum(len(b.transactions) for b in produced) == manifest.tx_counts["transactions"]
    assert manifest.tx_counts["transactions"] == manifest.tx_counts["iq"] + manifest.tx_counts["noise"]
    for prev, block in zip(produced, produced[1:]):
        assert block.parent_slot == prev.slot
        assert block.block_height == prev.block_height + 1
        assert block.block_time >= prev.block_time
    failed = 0
    v0 = 0
    for block in produced:
        for i, tx in enumerate(block.transactions):
            assert tx.slot == block.slot and tx.index == i
            assert all(tx.transaction.verify_with_results()), tx.signature
            assert tx.signature == str(tx.transaction.signatures[0])
            assert tx.meta.status in (TX_OK, TX_FAILED)
            failed += tx.meta.status == TX_FAILED
            v0 += isinstance(tx.transaction.message, MessageV0)
    assert failed == manifest.tx_counts["failed"]
    assert v0 == manifest.tx_counts["v0"]


def test_loaded_addresses_are_what_the_lookup_tables_hold(manifest, blocks):
    tables = {k: v for k, v in manifest.lookup_tables.items()}
    checked = 0
    for block in blocks:
        for tx in block.transactions:
            lookups = getattr(tx.transaction.message, "address_table_lookups", None)
            if not lookups:
                assert tx.meta.loaded_writable == [] and tx.meta.loaded_readonly == []
                continue
            writable, readonly = [], []
            for lookup in lookups:
                entries = tables[str(lookup.account_key)]
                writable += [entries[i] for i in lookup.writable_indexes]
                readonly += [entries[i] for i in lookup.readonly_indexes]
            assert tx.meta.loaded_writable == writable
            assert tx.meta.loaded_readonly == readonly
            checked += 1
    assert checked == manifest.tx_counts["v0"] > 0


def test_an_independent_reader_sees_the_same_transactions(chain_dir, manifest, blocks):
    """libipld decodes each CAR whole (links explicit): same transaction count and signatures."""
    ours = {t.signature for b in blocks for t in b.transactions}
    theirs = set()
    frames = 0
    for epoch, path in chain_car_paths(chain_dir).items():
        header, nodes = libipld.decode_car(path.read_bytes())
        assert len(header["roots"]) == 1 and header["version"] == 1
        assert nodes[header["roots"][0]][0] == 4          # the Epoch node is the root
        for node in nodes.values():
            if node[0] == 0:                               # Transaction: [kind, data frame, meta frame, slot, index]
                wire = node[1][4]
                assert epoch * SLOTS_PER_EPOCH <= node[3] < (epoch + 1) * SLOTS_PER_EPOCH
                theirs.add(str(Signature.from_bytes(wire[1:65])))
            frames += node[0] == 6
    assert theirs == ours
    assert frames > 0        # continuation DataFrames of the big metadata


def test_slot_ranges_index_marks_skipped_slots_with_zero_records(chain_dir, manifest):
    skipped = set(manifest.skipped_slots)
    assert skipped
    for epoch, rel in manifest.slot_range_files.items():
        raw = (chain_dir / rel).read_bytes()
        assert len(raw) == SLOTS_PER_EPOCH * SLOT_RANGE_RECORD.size
        base = int(epoch) * SLOTS_PER_EPOCH
        for slot in range(max(base, manifest.first_slot), min(base + SLOTS_PER_EPOCH - 1, manifest.last_slot) + 1):
            offset, length = SLOT_RANGE_RECORD.unpack_from(raw, (slot - base) * SLOT_RANGE_RECORD.size)
            assert (length == 0) == (slot in skipped), slot


def test_two_epoch_chain_writes_one_car_per_epoch(tmp_path):
    out = tmp_path / "c"
    first = 924 * SLOTS_PER_EPOCH - 150
    m = build_chain(out, seed=3, sessions=CATALOGUE_UPLOADS, noise_tx_per_slot=1, slots=300, first_slot=first)
    assert m.epochs == [923, 924]
    assert sorted(chain_car_paths(out)) == [923, 924]
    assert car_template(out).endswith("{epoch}/epoch-{epoch}.car")
    slots = [b.slot for b in iter_chain(out) if not b.skipped]
    assert slots[0] == first and slots[-1] == first + 299
    assert any(s < 924 * SLOTS_PER_EPOCH for s in slots) and any(s >= 924 * SLOTS_PER_EPOCH for s in slots)


def test_missing_manifest_or_car_is_a_clear_error(tmp_path):
    with pytest.raises(SourceError, match="manifest"):
        load_manifest(tmp_path)
    out = tmp_path / "c"
    build_chain(out, seed=2, sessions=CATALOGUE_UPLOADS, noise_tx_per_slot=0, slots=300)
    (out / "923" / "epoch-923.car").unlink()
    with pytest.raises(SourceError, match="epoch-923.car"):
        chain_car_paths(out)


# --- IQ instructions ----------------------------------------------------------------------------

def _instruction(tx, row):
    keys = tx.account_keys()
    if row["inner_index"] is None:
        ix = tx.transaction.message.instructions[row["ix_index"]]
        data = bytes(ix.data)
    else:
        group = next(g for g in tx.meta.inner_instructions if g.index == row["ix_index"])
        ix = group.instructions[row["inner_index"]]
        data = ix.data
    return keys[ix.program_id_index], [keys[i] for i in ix.accounts], data


def test_every_iq_instruction_decodes_to_the_record_that_was_encoded(chain_dir, manifest, txs_by_sig):
    rows = list(iter_expected_instructions(chain_dir))
    assert rows
    for row in rows:
        tx = txs_by_sig[row["signature"]]
        assert tx.slot == row["slot"] and tx.index == row["tx_index"]
        assert (tx.meta.status == TX_OK) == row["tx_ok"]
        program, accounts, data = _instruction(tx, row)
        assert program == row["program_id"]
        assert accounts == row["accounts"]
        assert decode(program, accounts, data).to_json() == row["record"], row["signature"]
    # And nothing else in the chain calls an IQ program, but the deliberate undecodable instruction.
    iq = set(manifest.all_program_ids())
    listed = {(r["signature"], r["ix_index"], r["inner_index"]) for r in rows}
    (unknown_sig,) = manifest.hard_case("undecodable_iq_instruction").signatures
    unknown = txs_by_sig[unknown_sig]
    keys = unknown.account_keys()
    ix = unknown.transaction.message.instructions[0]
    assert not decode(keys[ix.program_id_index], [keys[i] for i in ix.accounts], bytes(ix.data)).to_json()["decodable"]
    listed.add((unknown_sig, 0, None))
    found = set()
    for tx in txs_by_sig.values():
        keys = tx.account_keys()
        for i, ix in enumerate(tx.transaction.message.instructions):
            if keys[ix.program_id_index] in iq:
                found.add((tx.signature, i, None))
        for group in tx.meta.inner_instructions:
            for j, ix in enumerate(group.instructions):
                if keys[ix.program_id_index] in iq:
                    found.add((tx.signature, group.index, j))
    assert found == listed


def test_the_far_and_lookup_table_cases_are_really_there(manifest, txs_by_sig, chain_dir):
    far = next(u for u in manifest.uploads if "far_slot_window" in u.hard_cases)
    window_end = manifest.parameters["upload_window"][1]
    assert far.first_slot - window_end >= DEFAULT_FAR_GAP
    sibling = next(u for u in manifest.uploads if "chunk_far_from_siblings" in u.hard_cases)
    slots = sorted(txs_by_sig[s].slot for s in sibling.signatures)
    assert max(b - a for a, b in zip(slots, slots[1:])) >= DEFAULT_FAR_GAP
    # The IQ program reaches some transactions only through their lookup tables (metadata).
    hidden = manifest.hard_case("iq_program_in_lookup_table")
    for sig in hidden.signatures:
        tx = txs_by_sig[sig]
        static = {str(k) for k in tx.transaction.message.account_keys}
        loaded = set(tx.meta.loaded_writable) | set(tx.meta.loaded_readonly)
        assert loaded & set(manifest.all_program_ids()) and not static & set(manifest.all_program_ids())
    # Transactions that merely list IQ program ids carry no IQ instruction.
    rows = {r["signature"] for r in iter_expected_instructions(chain_dir)}
    only = manifest.hard_case("iq_program_as_account_only")
    assert len(only.signatures) == 2 and not rows & set(only.signatures)
    for sig in only.signatures:
        assert set(txs_by_sig[sig].account_keys()) & set(manifest.all_program_ids())


def test_big_metadata_survives_several_dataframes(manifest, txs_by_sig):
    case = manifest.hard_case("meta_spans_dataframes")
    assert len(case.signatures) >= 2
    big = [txs_by_sig[s] for s in case.signatures if len(txs_by_sig[s].meta.log_messages) > 100]
    assert big
    for tx in big:
        assert all(line.startswith("Program") for line in tx.meta.log_messages)


# --- manifest ground truth ------------------------------------------------------------------------

def test_manifest_uploads_match_the_chain(chain_dir, manifest, txs_by_sig):
    rows_by_key = defaultdict(list)
    for row in iter_expected_instructions(chain_dir):
        rows_by_key[row["upload_key"]].append(row)
    keys = [u.upload_key for u in manifest.uploads]
    assert len(keys) == len(set(keys)) == manifest.parameters["sessions"]
    for u in manifest.uploads:
        assert u.expected_status in STATUSES
        original = (chain_dir / u.original_file).read_bytes()
        assert hashlib.sha256(original).hexdigest() == u.original_sha256 and len(original) == u.original_length
        for sig in u.signatures:
            tx = txs_by_sig[sig]
            assert (tx.meta.status == TX_FAILED) == (sig in u.failed_signatures)
        ok_slots = [txs_by_sig[s].slot for s in u.signatures if s not in u.failed_signatures]
        assert (u.first_slot, u.last_slot) == (min(ok_slots), max(ok_slots))
        if u.finalize_signature:
            assert txs_by_sig[u.finalize_signature].slot == u.finalize_slot
        assert {r["signature"] for r in rows_by_key[u.upload_key]} == set(u.signatures)
        if u.expected_status != COMPLETE:
            assert u.joined_sha256 == ""
            continue
        # Rebuild the joined bytes from the chain: per index the earliest successful copy.
        pieces = {}
        for row in sorted(rows_by_key[u.upload_key], key=lambda r: (r["slot"], r["tx_index"])):
            rec = row["record"]
            if not row["tx_ok"] or rec["payload_base64"] is None or rec["kind"] == "finalize" and u.shape != "inline":
                continue
            index = rec["chunk_index"] if rec["chunk_index"] is not None else 0
            pieces.setdefault(index, base64.b64decode(rec["payload_base64"]))
        if u.shape == "linked_list":
            joined = _walk_linked_list(rows_by_key[u.upload_key], u.upload_key)
        else:
            assert sorted(pieces) == list(range(u.expected_total))
            joined = b"".join(pieces[i] for i in range(u.expected_total))
        assert hashlib.sha256(joined).hexdigest() == u.joined_sha256
        file_bytes, rule = gateway_file_bytes(joined)
        assert hashlib.sha256(file_bytes).hexdigest() == u.file_sha256 and rule == u.decode_rule
        if rule in ("base64", "data_url") or u.generation in ("g2_pinocchio", "g2_legacy") or u.filetype == "text/plain":
            assert file_bytes == original


def _walk_linked_list(rows, tail):
    by_sig = {r["signature"]: r["record"] for r in rows if r["tx_ok"] and r["record"]["kind"] == "linked_piece"}
    out = []
    sig = tail
    while sig != "Genesis":
        rec = by_sig[sig]
        out.append(base64.b64decode(rec["payload_base64"]))
        sig = rec["before_tx"]
    return b"".join(reversed(out))


def test_every_hard_case_is_present_and_statuses_cover_the_vocabulary(manifest):
    names = {h.name for h in manifest.hard_cases}
    assert set(HARD_CASES) <= names
    assert {"iq_program_as_account_only", "skipped_slots"} <= names
    assert {u.expected_status for u in manifest.uploads} == set(STATUSES)
    for h in manifest.hard_cases:
        assert h.slots, h.name
    by_status = defaultdict(list)
    for u in manifest.uploads:
        by_status[u.expected_status].append(u)
    assert all(u.missing_indexes for u in by_status["missing_chunks"])
    assert all(not u.finalize_signature for u in by_status["awaiting_finalize"])
    broken = next(u for u in manifest.uploads if "linked_list_broken" in u.hard_cases)
    assert len(broken.fragment_keys) == 1 and broken.fragment_keys[0] in broken.signatures
    assert all(not u.fragment_keys for u in manifest.uploads if u is not broken)
    reused = [u for u in manifest.uploads if "session_account_reused" in u.hard_cases]
    assert len(reused) == 2 and reused[0].session_account == reused[1].session_account
    assert reused[0].session_id != reused[1].session_id
    hostile = [u.filename for u in manifest.uploads if "hostile_filename" in u.hard_cases]
    assert "../../etc/passwd" in hostile and any("\x00" in name for name in hostile)
    assert manifest.extra_program_ids == [manifest.program_ids["g2_legacy"]]
    Pubkey.from_string(manifest.extra_program_ids[0])


def test_manifest_json_is_plain_and_round_trips(chain_dir, manifest):
    data = json.loads((chain_dir / "manifest.json").read_text())
    assert data["format"] == "iq-etl-devchain/1"
    assert type(manifest).from_json(data) == manifest
