"""Transaction status metadata: protobuf written and read back, legacy bincode, errors, unknown."""
from __future__ import annotations

import struct

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st
from solders.pubkey import Pubkey

from iq_etl.ingest.sources.car.tx_meta import (
    MetaError,
    decode_bincode_meta,
    decode_meta,
    encode_meta,
    encode_transaction_error,
    loaded_keys,
    transaction_error_text,
)
from iq_etl.solana.model import TX_FAILED, TX_OK, TX_UNKNOWN, InnerInstruction, InnerInstructions, TxMeta


def _key(i: int) -> str:
    return str(Pubkey.from_bytes(bytes([i]) * 32))


def test_protobuf_round_trip_keeps_every_field():
    meta = TxMeta(status=TX_FAILED, err='{"InstructionError":[2,{"Custom":6001}]}', fee=5000,
                  loaded_writable=[_key(1), _key(2)], loaded_readonly=[_key(3)],
                  inner_instructions=[InnerInstructions(1, [InnerInstruction(4, b"\x00\x02", b"data", 2),
                                                            InnerInstruction(5, b"", b"", None)])],
                  log_messages=["Program log: hi", ""], compute_units=12345)
    raw = encode_meta(meta)
    assert raw.startswith(b"\x28\xb5\x2f\xfd")
    assert decode_meta(raw, epoch=800) == meta
    assert loaded_keys(zstandard.ZstdDecompressor().decompress(raw)) == [bytes([i]) * 32 for i in (1, 2, 3)]


def test_missing_logs_stay_missing_and_empty_logs_stay_empty():
    assert decode_meta(encode_meta(TxMeta(status=TX_OK, fee=1, log_messages=None))).log_messages is None
    assert decode_meta(encode_meta(TxMeta(status=TX_OK, fee=1, log_messages=[]))).log_messages == []


def test_empty_metadata_is_unknown():
    assert decode_meta(b"").status == TX_UNKNOWN
    assert encode_meta(TxMeta(status=TX_UNKNOWN)) == b""
    assert decode_meta(zstandard.ZstdCompressor().compress(b"")).status == TX_UNKNOWN


@pytest.mark.parametrize("err", [
    '"AccountInUse"', '"BlockhashNotFound"', '{"InstructionError":[0,"GenericError"]}',
    '{"InstructionError":[3,{"Custom":0}]}', '{"InstructionError":[1,{"BorshIoError":"bad"}]}',
    '{"DuplicateInstruction":4}', '{"InsufficientFundsForRent":{"account_index":2}}',
])
def test_transaction_errors_round_trip_as_rpc_json(err):
    assert transaction_error_text(encode_transaction_error(err)) == err


def test_unknown_error_bytes_fall_back_to_hex():
    assert transaction_error_text(b"\xff\x00\x00\x00") == "ff000000"


def _bincode_meta(status: bytes, fee: int, pre: list[int], post: list[int], tail: bytes = b"") -> bytes:
    def vec(xs):
        return struct.pack("<Q", len(xs)) + b"".join(struct.pack("<Q", x) for x in xs)
    return status + struct.pack("<Q", fee) + vec(pre) + vec(post) + tail


def test_legacy_bincode_ok_failed_and_optional_fields():
    ok = _bincode_meta(struct.pack("<I", 0), 5000, [1, 2], [3, 4])
    assert decode_bincode_meta(ok) == TxMeta(status=TX_OK, fee=5000)
    failed = _bincode_meta(struct.pack("<I", 1) + encode_transaction_error('{"InstructionError":[0,{"Custom":1}]}'),
                           10000, [5], [5])
    meta = decode_meta(zstandard.ZstdCompressor().compress(failed), epoch=50)
    assert meta.status == TX_FAILED and meta.err == '{"InstructionError":[0,{"Custom":1}]}' and meta.fee == 10000
    # Some(inner instructions) with one CompiledInstruction (short_vec lengths), then Some(logs)
    inner = b"\x01" + struct.pack("<Q", 1) + b"\x00" + struct.pack("<Q", 1) + b"\x02" + b"\x02\x00\x01" + b"\x01\x09"
    logs = b"\x01" + struct.pack("<Q", 1) + struct.pack("<Q", 5) + b"hello"
    meta = decode_bincode_meta(_bincode_meta(struct.pack("<I", 0), 1, [], [], inner + logs))
    assert meta.inner_instructions == [InnerInstructions(0, [InnerInstruction(2, b"\x00\x01", b"\x09")])]
    assert meta.log_messages == ["hello"]


def test_real_bincode_vector_metadata(fixtures_dir):
    import libipld

    node = libipld.decode_dag_cbor((fixtures_dir / "vectors" / "transaction_raw0.cbor").read_bytes())
    meta = decode_meta(node[2][4], epoch=39)
    assert meta == TxMeta(status=TX_OK, fee=5000)


def test_garbage_metadata_is_an_error():
    with pytest.raises(MetaError):
        decode_meta(b"not zstd")
    with pytest.raises(MetaError):
        decode_meta(zstandard.ZstdCompressor().compress(b"\x07\x07\x07\x07\x07"))


@settings(max_examples=60, deadline=None)
@given(fee=st.integers(0, 2**63), cu=st.one_of(st.none(), st.integers(0, 2**32)),
       logs=st.one_of(st.none(), st.lists(st.text(max_size=40), max_size=4)),
       n_loaded=st.integers(0, 4), failed=st.booleans(), custom=st.integers(0, 2**32 - 1))
def test_protobuf_round_trip_property(fee, cu, logs, n_loaded, failed, custom):
    meta = TxMeta(status=TX_FAILED if failed else TX_OK,
                  err=f'{{"InstructionError":[0,{{"Custom":{custom}}}]}}' if failed else None, fee=fee,
                  loaded_writable=[_key(10 + i) for i in range(n_loaded)], loaded_readonly=[_key(50)] * (n_loaded % 2),
                  log_messages=logs, compute_units=cu)
    assert decode_meta(encode_meta(meta)) == meta
