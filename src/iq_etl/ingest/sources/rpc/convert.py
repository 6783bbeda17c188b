"""RPC JSON <-> the source model (ChainTransaction / TxMeta), both directions.

Reading (the RPC sources): `getTransaction` / `getBlock` entries in `base64` encoding become
ChainTransactions whose content equals what the CAR source yields for the same chain:
- the transaction is the wire `VersionedTransaction` (solders parses the base64 bytes);
- `meta.err` becomes compact JSON text (`{"InstructionError":[0,{"Custom":1}]}`), the form
  iq_etl.ingest.sources.car.tx_meta renders the CAR's bincode error in; a meta of null -> status TX_UNKNOWN;
- `innerInstructions[].instructions[].data` is base58 in both the json and base64 encodings
  (agave builds `UiCompiledInstruction` with bs58 for every non-parsed encoding), so it is base58
  decoded; `accounts` is a list of u8 indexes; `stackHeight` may be absent or null;
- `logMessages` null -> None (as the protobuf's `log_messages_none`), absent `computeUnitsConsumed`
  -> None, absent `loadedAddresses` (legacy transactions on old nodes) -> no loaded keys.

Writing (the loopback server): a ChainTransaction becomes the `EncodedTransactionWithStatusMeta`
JSON a mainnet node sends, built and checked with solders' RPC types.
"""
from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from solders.hash import Hash
from solders.transaction import Legacy, VersionedTransaction
from solders.transaction_status import (
    EncodedTransactionWithStatusMeta,
    UiAddressTableLookup,
    UiCompiledInstruction,
    UiRawMessage,
    UiTransaction,
    UiTransactionStatusMeta,
)

from iq_etl.errors import SourceError
from iq_etl.solana.model import (
    TX_FAILED,
    TX_OK,
    TX_UNKNOWN,
    ChainTransaction,
    InnerInstruction,
    InnerInstructions,
    TxMeta,
)

# --- base58 ---------------------------------------------------------------------------------------

_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {c: i for i, c in enumerate(_B58)}


def b58encode(data: bytes) -> str:
    n = int.from_bytes(data, "big")
    out = []
    while n:
        n, r = divmod(n, 58)
        out.append(_B58[r])
    pad = len(data) - len(data.lstrip(b"\0"))
    return "1" * pad + "".join(reversed(out))


def b58decode(text: str) -> bytes:
    n = 0
    for ch in text:
        try:
            n = n * 58 + _B58_INDEX[ch]
        except KeyError:
            raise ValueError(f"invalid base58 character {ch!r}") from None
    body = n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b""
    pad = len(text) - len(text.lstrip("1"))
    return b"\0" * pad + body


# --- reading: RPC JSON -> model -------------------------------------------------------------------

def err_text(err: Any) -> str | None:
    """RPC `err` value -> the compact JSON text TxMeta.err holds (None when there is no error)."""
    return None if err is None else json.dumps(err, separators=(",", ":"))


def meta_from_rpc(meta: dict | None, *, where: str = "") -> TxMeta:
    """A `meta` object of getTransaction/getBlock (base64 or json encoding) -> TxMeta."""
    if meta is None:
        return TxMeta(status=TX_UNKNOWN)
    try:
        err = meta.get("err")
        loaded = meta.get("loadedAddresses") or {}
        inner = []
        for group in meta.get("innerInstructions") or ():
            ixs = []
            for ix in group["instructions"]:
                if "programIdIndex" not in ix:
                    raise ValueError("inner instruction is in jsonParsed form; ask for base64 or json encoding")
                ixs.append(InnerInstruction(
                    program_id_index=int(ix["programIdIndex"]),
                    accounts=bytes(ix["accounts"]),
                    data=b58decode(ix["data"]),
                    stack_height=ix.get("stackHeight"),
                ))
            inner.append(InnerInstructions(index=int(group["index"]), instructions=ixs))
        logs = meta.get("logMessages")
        return TxMeta(
            status=TX_OK if err is None else TX_FAILED,
            err=err_text(err),
            fee=meta.get("fee"),
            loaded_writable=list(loaded.get("writable") or ()),
            loaded_readonly=list(loaded.get("readonly") or ()),
            inner_instructions=inner,
            log_messages=None if logs is None else list(logs),
            compute_units=meta.get("computeUnitsConsumed"),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise SourceError(f"{where}: malformed transaction meta: {type(exc).__name__}: {exc}") from None


def versioned_transaction_from_rpc(encoded: Any, *, where: str = "") -> VersionedTransaction:
    """The `transaction` field in a binary encoding (["<data>", "base64"|"base58"]) -> VersionedTransaction."""
    if not (isinstance(encoded, list) and len(encoded) == 2 and isinstance(encoded[0], str)):
        raise SourceError(f"{where}: transaction is not in a binary encoding (ask for encoding base64)")
    data, encoding = encoded
    try:
        if encoding == "base64":
            raw = base64.b64decode(data, validate=True)
        elif encoding == "base58":
            raw = b58decode(data)
        else:
            raise ValueError(f"unknown transaction encoding {encoding!r}")
        return VersionedTransaction.from_bytes(raw)
    except Exception as exc:  # noqa: BLE001 - solders raises several types for malformed bytes
        raise SourceError(f"{where}: undecodable transaction: {type(exc).__name__}: {exc}") from None


def transaction_from_rpc(entry: dict, *, slot: int, index: int | None, block_time: int | None,
                         where: str = "") -> ChainTransaction:
    """One `{transaction, meta, version}` entry (getBlock's transactions[] or getTransaction's result)."""
    if not isinstance(entry, dict) or "transaction" not in entry:
        raise SourceError(f"{where}: transaction entry without a 'transaction' field")
    vtx = versioned_transaction_from_rpc(entry["transaction"], where=where)
    if not vtx.signatures:
        raise SourceError(f"{where}: transaction without signatures")
    return ChainTransaction(
        signature=str(vtx.signatures[0]),
        slot=slot,
        index=index,
        transaction=vtx,
        meta=meta_from_rpc(entry.get("meta"), where=where),
        block_time=block_time,
    )


# --- writing: model -> RPC JSON (the loopback server) ---------------------------------------------

MEMO_PROGRAMS = frozenset({
    "Memo1UhkJRfHyvLMcVucJwxXeuD728EqVDDwQDxFMNo",  # spl-memo v1
    "MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr",  # spl-memo v3
})


def is_v0(vtx: VersionedTransaction) -> bool:
    return vtx.version() != Legacy.Legacy


def err_value(meta: TxMeta) -> Any:
    """TxMeta.err (compact JSON, or hex of bincode the CAR reader could not name) -> RPC err value."""
    if meta.status != TX_FAILED:
        return None
    if meta.err is None:
        return {"InstructionError": [0, "GenericError"]}
    try:
        return json.loads(meta.err)
    except json.JSONDecodeError:
        # Unknown bincode variants are kept as hex by the CAR reader; show them as text, not drop them.
        return meta.err


def meta_to_rpc(meta: TxMeta) -> dict | None:
    """TxMeta -> the `meta` object a node sends (checked by solders). None for TX_UNKNOWN.

    Balances and token balances are not part of the model: they are sent as empty lists."""
    if meta.status == TX_UNKNOWN:
        return None
    err = err_value(meta)
    obj: dict[str, Any] = {
        "err": err,
        "status": {"Ok": None} if err is None else {"Err": err},
        "fee": meta.fee or 0,
        "preBalances": [],
        "postBalances": [],
        "innerInstructions": [
            {"index": g.index, "instructions": [
                {"programIdIndex": ix.program_id_index, "accounts": list(ix.accounts),
                 "data": b58encode(bytes(ix.data)), "stackHeight": ix.stack_height}
                for ix in g.instructions]}
            for g in meta.inner_instructions
        ],
        "logMessages": meta.log_messages,
        "preTokenBalances": [],
        "postTokenBalances": [],
        "rewards": [],
        "loadedAddresses": {"writable": list(meta.loaded_writable), "readonly": list(meta.loaded_readonly)},
    }
    if meta.compute_units is not None:
        obj["computeUnitsConsumed"] = meta.compute_units
    try:
        return json.loads(UiTransactionStatusMeta.from_json(json.dumps(obj)).to_json())
    except ValueError:
        # solders only knows the error variants of its Solana version; a newer one is sent as is.
        return obj


def ui_transaction(vtx: VersionedTransaction) -> UiTransaction:
    """The `json` encoding of a transaction (UiTransaction with a raw message), as agave builds it."""
    msg = vtx.message
    instructions = [
        UiCompiledInstruction(ix.program_id_index, bytes(ix.accounts), b58encode(bytes(ix.data)), None)
        for ix in msg.instructions
    ]
    lookups = None
    if is_v0(vtx):
        lookups = [UiAddressTableLookup(l.account_key, bytes(l.writable_indexes), bytes(l.readonly_indexes))
                   for l in msg.address_table_lookups]
    return UiTransaction(vtx.signatures, UiRawMessage(msg.header, msg.account_keys, msg.recent_blockhash,
                                                      instructions, lookups))


def transaction_to_rpc(tx: ChainTransaction, *, encoding: str, with_version: bool) -> dict:
    """ChainTransaction -> `{transaction, meta[, version]}` as getBlock/getTransaction send it.

    `with_version` is whether the request gave maxSupportedTransactionVersion (mainnet sends the
    `version` field only then)."""
    vtx = tx.transaction
    legacy = not is_v0(vtx)
    meta_obj = meta_to_rpc(tx.meta)
    version = (Legacy.Legacy if legacy else 0) if with_version else None
    if encoding == "json":
        encoded: Any = ui_transaction(vtx)
    elif encoding in ("base64", "base58"):
        encoded = vtx
    else:
        raise ValueError(f"unsupported encoding {encoding!r}")
    etx = EncodedTransactionWithStatusMeta(encoded, None, version)
    out = json.loads(etx.to_json())
    out["meta"] = meta_obj
    if encoding == "base58":
        out["transaction"] = [b58encode(bytes(vtx)), "base58"]
    # keep mainnet's key order: transaction, meta, version
    return {k: out[k] for k in ("transaction", "meta", "version") if k in out}


def memo_of(tx: ChainTransaction) -> str | None:
    """getSignaturesForAddress's `memo`: every spl-memo instruction as "[len] text", joined by "; "."""
    keys = tx.account_keys()
    memos = []
    for ix in tx.transaction.message.instructions:
        if ix.program_id_index < len(keys) and keys[ix.program_id_index] in MEMO_PROGRAMS:
            data = bytes(ix.data)
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                text = "(unparseable)"
            memos.append(f"[{len(data)}] {text}")
    return "; ".join(memos) if memos else None


def synthetic_blockhash(slot: int) -> str:
    """A stable stand-in blockhash for a slot (the model does not carry the entries' PoH hash)."""
    return str(Hash(hashlib.sha256(b"iq-etl-devchain-blockhash" + slot.to_bytes(8, "little")).digest()))


__all__ = [
    "b58encode", "b58decode", "err_text", "meta_from_rpc", "versioned_transaction_from_rpc",
    "transaction_from_rpc", "err_value", "meta_to_rpc", "ui_transaction", "transaction_to_rpc",
    "memo_of", "synthetic_blockhash", "is_v0",
]
