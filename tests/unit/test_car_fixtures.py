"""The reader on real Old Faithful data: the two sample CARs (mainnet epoch 0, slots 0–19) and the
single-node vectors from yellowstone-faithful with that project's own expected decodings."""
from __future__ import annotations

import base64
import json
import subprocess
import sys

import libipld
import pytest
from solders.transaction import VersionedTransaction

from iq_etl.devchain.car_writer import Link, encode_dag_cbor
from iq_etl.ingest.sources.car.format import KIND_NAMES, cid_for
from iq_etl.ingest.sources.car.inspect import summarize
from iq_etl.ingest.sources.car.reader import CarFile, IncompleteRange, _frame_fields
from iq_etl.ingest.sources.car.source import CarSource
from iq_etl.ingest.sources.car.tx_meta import decode_meta
from iq_etl.solana.model import TX_OK, TX_UNKNOWN

SAMPLES = {
    "epoch-0-1.car": ({"entry": 667, "transaction": 34, "block": 10, "subset": 1}, (0, 9)),
    "epoch-0-2.car": ({"entry": 668, "transaction": 41, "block": 10, "subset": 1}, (10, 19)),
}


def _raw_transactions(path):
    """(slot, index, wire bytes) for every Transaction node, decoded independently of the reader."""
    data = path.read_bytes()
    _, nodes = libipld.decode_car(data)  # fine for a 100 KB fixture; the reader never does this
    out = []
    for node in nodes.values():
        if node[0] == 0:
            out.append((node[3], node[4], node[1][4]))
    return sorted(out)


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_node_counts_and_slots(fixtures_dir, name):
    counts, (first, last) = SAMPLES[name]
    summary = summarize(CarFile(str(fixtures_dir / name)))
    expected = dict.fromkeys(KIND_NAMES, 0) | counts
    assert summary.kinds == expected
    assert (summary.first_slot, summary.last_slot) == (first, last)
    assert sum(summary.transactions_per_slot.values()) == counts["transaction"]
    assert sorted(summary.transactions_per_slot) == list(range(first, last + 1))


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_blocks_and_signatures_match_solders(fixtures_dir, name):
    counts, (first, last) = SAMPLES[name]
    path = fixtures_dir / name
    blocks = list(CarSource(str(path)).iter_blocks(first, last))
    assert [b.slot for b in blocks] == list(range(first, last + 1))
    assert not any(b.skipped for b in blocks)
    assert all(b.parent_slot == max(b.slot - 1, 0) for b in blocks)
    txs = [t for b in blocks for t in b.transactions]
    assert len(txs) == counts["transaction"] == sum(b.transactions_seen for b in blocks)
    raw = _raw_transactions(path)
    got = sorted((t.slot, t.index, str(t.signature)) for t in txs)
    want = sorted((slot, index, str(VersionedTransaction.from_bytes(wire).signatures[0])) for slot, index, wire in raw)
    assert got == want
    for t in txs:
        assert bytes(t.transaction) in {w for _, _, w in raw}


def test_epoch0_metadata_is_unknown_not_success(fixtures_dir):
    blocks = CarSource(str(fixtures_dir / "epoch-0-1.car")).iter_blocks(0, 9)
    statuses = {t.meta.status for b in blocks for t in b.transactions}
    assert statuses == {TX_UNKNOWN}


def test_first_signatures_in_file_order(fixtures_dir):
    path = fixtures_dir / "epoch-0-1.car"
    summary = summarize(CarFile(str(path)))
    blocks = list(CarSource(str(path)).iter_blocks(0, 9))
    in_order = [t.signature for b in blocks for t in b.transactions]
    assert summary.first_signatures == in_order[:3]


def test_sub_range_and_range_past_the_file(fixtures_dir):
    path = str(fixtures_dir / "epoch-0-2.car")
    assert [b.slot for b in CarSource(path).iter_blocks(12, 14)] == [12, 13, 14]
    got = []
    with pytest.raises(IncompleteRange) as info:
        for block in CarSource(path).iter_blocks(15, 25):
            got.append(block.slot)
    assert got == [15, 16, 17, 18, 19]
    assert "25" in str(info.value) and path in str(info.value)
    # the file says nothing about slots before 10: asking for them is incomplete coverage, not "skipped"
    with pytest.raises(IncompleteRange):
        list(CarSource(path).iter_blocks(5, 12))


def test_inspect_cli_json(fixtures_dir):
    out = subprocess.run([sys.executable, "-m", "iq_etl.cli.main", "car", "inspect", str(fixtures_dir / "epoch-0-2.car"),
                          "--json"], capture_output=True, text=True, check=True)
    doc = json.loads(out.stdout)
    assert doc["kinds"]["entry"] == 668 and doc["kinds"]["transaction"] == 41
    assert doc["first_slot"] == 10 and doc["last_slot"] == 19
    assert sum(doc["transactions_per_slot"].values()) == 41
    assert len(doc["first_signatures"]) == 3


# --- vectors ---------------------------------------------------------------------------------------

def _vector_files(fixtures_dir):
    return sorted((fixtures_dir / "vectors").glob("*.cbor"))


def test_every_vector_decodes_to_its_kind(fixtures_dir):
    files = _vector_files(fixtures_dir)
    assert {f.name.split("_")[0].lower() for f in files} == set(KIND_NAMES)  # every kind is covered
    for f in files:
        node = libipld.decode_dag_cbor(f.read_bytes())
        kind_name = f.name.split("_")[0].lower()
        assert KIND_NAMES[node[0]] == kind_name, f.name
        if node[0] == 6:
            h, index, total, data, nxt = _frame_fields(node, f.name)
            assert isinstance(data, bytes) and 0 <= index < total


def _frame_json(frame):
    h, index, total, data, nxt = _frame_fields(frame, "vector")
    return {"kind": 6, "hash": h, "index": index, "total": total, "data": base64.b64encode(data).decode(),
            "next": nxt or None}


def test_transaction_and_rewards_vectors_match_expected(fixtures_dir):
    expected = json.loads((fixtures_dir / "vectors" / "expected.json").read_text())
    assert {k for k in expected if k.startswith("transaction")} == {f"transaction_raw{i}" for i in range(6)}
    for name, want in expected.items():
        node = libipld.decode_dag_cbor((fixtures_dir / "vectors" / f"{name}.cbor").read_bytes())
        if want["kind"] == 0:
            got = {"kind": 0, "data": _frame_json(node[1]), "metadata": _frame_json(node[2]), "slot": node[3],
                   "index": node[4] if len(node) > 4 else None}
        else:
            got = {"kind": 5, "slot": node[1], "data": _frame_json(node[2])}
        assert got == want, name


def _car_of(nodes_by_slot: dict[int, list[bytes]]) -> bytes:
    """A CAR of real node bytes, each slot closed by a Block node linking nothing."""
    def section(node: bytes) -> bytes:
        body = cid_for(node) + node
        n = len(body)
        prefix = bytearray()
        while n >= 0x80:
            prefix.append(n & 0x7F | 0x80)
            n >>= 7
        prefix.append(n)
        return bytes(prefix) + body
    body = []
    for slot, nodes in sorted(nodes_by_slot.items()):
        body.extend(section(n) for n in nodes)
        last = encode_dag_cbor([2, slot, [], [], [slot - 1, 0, None], Link(b"\x01\x55\x00\x00")])
        body.append(section(last))
    subset = encode_dag_cbor([3, min(nodes_by_slot), max(nodes_by_slot), []])  # the root, last like in YF files
    body.append(section(subset))
    header = encode_dag_cbor({"roots": [Link(cid_for(subset))], "version": 1})
    return bytes([len(header)]) + header + b"".join(body)


def test_transaction_vectors_through_the_reader(fixtures_dir, tmp_path):
    """Real mainnet Transaction nodes from epoch 39 (zstd bincode metadata) and slot 1 (empty)."""
    expected = json.loads((fixtures_dir / "vectors" / "expected.json").read_text())
    by_slot: dict[int, list[bytes]] = {}
    for i in range(6):
        raw = (fixtures_dir / "vectors" / f"transaction_raw{i}.cbor").read_bytes()
        by_slot.setdefault(expected[f"transaction_raw{i}"]["slot"], []).append(raw)
    path = tmp_path / "vectors.car"
    path.write_bytes(_car_of(by_slot))
    blocks = list(CarFile(str(path)).iter_slots(yield_skipped=False))
    txs = {(t.slot, t.index): t for b in blocks for t in b.transactions}
    assert len(txs) == 6
    for i in range(6):
        want = expected[f"transaction_raw{i}"]
        tx = txs[(want["slot"], want["index"])]
        wire = base64.b64decode(want["data"]["data"])
        assert bytes(tx.transaction) == wire
        assert tx.signature == str(VersionedTransaction.from_bytes(wire).signatures[0])
        if want["metadata"]["data"]:
            assert tx.meta.status == TX_OK and tx.meta.fee == 5000
            assert tx.meta == decode_meta(base64.b64decode(want["metadata"]["data"]), epoch=39)
        else:
            assert tx.meta.status == TX_UNKNOWN


def test_multi_frame_vectors_share_one_hash(fixtures_dir):
    nodes = [libipld.decode_dag_cbor((fixtures_dir / "vectors" / f"dataFrame_raw{i}.cbor").read_bytes())
             for i in (1, 2)]
    hashes = {_frame_fields(n, "v")[0] for n in nodes}
    assert len(hashes) == 1
    assert all(_frame_fields(n, "v")[2] == 28 for n in nodes)
