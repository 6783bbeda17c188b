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
#
# Peer data is checked, never defaulted: a field the Solana RPC always sends must be there with the
# right type, or the reader raises SourceError naming the method, the position and the field. The
# only defaults are for fields agave may leave out (its serializer skips them, see the comments);
# each one says so where it is read.

def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


_KINDS: dict[str, tuple[str, Any]] = {
    "int": ("an integer", _is_int),
    "str": ("a string", lambda v: isinstance(v, str)),
    "list": ("a list", lambda v: isinstance(v, list)),
    "object": ("an object", lambda v: isinstance(v, dict)),
    "any": ("a value", lambda v: True),
}


def shown(value: Any, limit: int = 60) -> str:
    """A peer value for an error message: 'abc' for text, JSON for the rest, cut to `limit`."""
    text = repr(value) if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check(value: Any, kind: str, what: str, *, nullable: bool = False) -> Any:
    """`value` if it is of `kind` (int/str/list/object/any; null too when nullable), else SourceError
    "<what> is <value>, expected <kind>"."""
    if value is None and nullable:
        return None
    label, ok = _KINDS[kind]
    if not ok(value):
        raise SourceError(f"{what} is {shown(value)}, expected {label}{' or null' if nullable else ''}")
    return value


def require(obj: dict, key: str, kind: str, where: str, *, nullable: bool = False) -> Any:
    """obj[key], which must be present (null only when nullable) and of `kind`. SourceError otherwise:
    "<where> has no '<key>' field" or "<where> has <key> <value>, expected <kind>"."""
    if key not in obj:
        raise SourceError(f"{where} has no '{key}' field")
    value = obj[key]
    if value is None and nullable:
        return None
    label, ok = _KINDS[kind]
    if not ok(value):
        raise SourceError(f"{where} has {key} {shown(value)}, expected {label}{' or null' if nullable else ''}")
    return value


def optional(obj: dict, key: str, kind: str, where: str) -> Any:
    """obj[key] for a field the RPC may leave out or send as null (None then); of `kind` when present."""
    if obj.get(key) is None:
        return None
    return require(obj, key, kind, where)


def err_text(err: Any) -> str | None:
    """RPC `err` value -> the compact JSON text TxMeta.err holds (None when there is no error)."""
    return None if err is None else json.dumps(err, separators=(",", ":"))


def _inner_instructions(groups: list, where: str) -> list[InnerInstructions]:
    out = []
    for g, group in enumerate(groups):
        gwhere = f"{where} innerInstructions[{g}]"
        check(group, "object", gwhere)
        ixs = []
        for i, ix in enumerate(require(group, "instructions", "list", gwhere)):
            iwhere = f"{gwhere}.instructions[{i}]"
            check(ix, "object", iwhere)
            if "programIdIndex" not in ix and "programId" in ix:
                raise SourceError(f"{iwhere} is in jsonParsed form; ask for base64 or json encoding")
            accounts = require(ix, "accounts", "list", iwhere)
            if not all(_is_int(a) and 0 <= a < 256 for a in accounts):
                raise SourceError(f"{iwhere} has accounts {shown(accounts)}, expected account indexes (0-255)")
            data = require(ix, "data", "str", iwhere)
            try:
                raw = b58decode(data)
            except ValueError as exc:
                raise SourceError(f"{iwhere} has data {shown(data)}, expected base58: {exc}") from None
            ixs.append(InnerInstruction(
                program_id_index=require(ix, "programIdIndex", "int", iwhere),
                accounts=bytes(accounts),
                data=raw,
                # added in agave 1.16 (absent on older ledger entries, null when unknown)
                stack_height=optional(ix, "stackHeight", "int", iwhere),
            ))
        out.append(InnerInstructions(index=require(group, "index", "int", gwhere), instructions=ixs))
    return out


def meta_from_rpc(meta: dict | None, *, where: str = "") -> TxMeta:
    """A `meta` object of getTransaction/getBlock (base64 or json encoding) -> TxMeta.

    `err` and `fee` are always sent. agave's serializer may skip innerInstructions, logMessages,
    loadedAddresses and computeUnitsConsumed (`OptionSerializer::Skip`: not recorded on old ledger
    entries, loadedAddresses only with maxSupportedTransactionVersion), so these may be absent."""
    if meta is None:
        return TxMeta(status=TX_UNKNOWN)
    mwhere = f"{where}: malformed transaction meta"
    check(meta, "object", mwhere)
    try:
        err = require(meta, "err", "any", mwhere, nullable=True)
        fee = require(meta, "fee", "int", mwhere)
        # null when inner-instruction recording was off, per the RPC docs; absent when agave skips it
        inner = _inner_instructions(optional(meta, "innerInstructions", "list", mwhere) or [], mwhere)
        logs = optional(meta, "logMessages", "list", mwhere)  # null / absent: not recorded (kept as None)
        if logs is not None and not all(isinstance(line, str) for line in logs):
            raise SourceError(f"{mwhere} has logMessages that are not all strings")
        writable: list = []
        readonly: list = []
        # absent for legacy transactions on old nodes and without maxSupportedTransactionVersion;
        # transaction_from_rpc checks the count against the transaction's lookups
        loaded = optional(meta, "loadedAddresses", "object", mwhere)
        if loaded is not None:
            lwhere = f"{mwhere} loadedAddresses"
            writable = require(loaded, "writable", "list", lwhere)
            readonly = require(loaded, "readonly", "list", lwhere)
            if not all(isinstance(k, str) for k in writable + readonly):
                raise SourceError(f"{lwhere} holds a key that is not a string")
        return TxMeta(
            status=TX_OK if err is None else TX_FAILED,
            err=err_text(err),
            fee=fee,
            loaded_writable=list(writable),
            loaded_readonly=list(readonly),
            inner_instructions=inner,
            log_messages=None if logs is None else list(logs),
            # absent on ledger entries from before it was recorded (agave skips it then)
            compute_units=optional(meta, "computeUnitsConsumed", "int", mwhere),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:  # a safety net: checks above name fields
        raise SourceError(f"{mwhere}: {type(exc).__name__}: {exc}") from None


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
    """One `{transaction, meta, version}` entry (getBlock's transactions[] or getTransaction's result).

    `meta` must be there (null means the node has no status for it: TX_UNKNOWN); `version` is sent only
    when the request gave maxSupportedTransactionVersion and must then match the transaction. A v0
    transaction's loadedAddresses must hold as many keys as its lookups name (else the account-key
    filter would silently miss transactions)."""
    check(entry, "object", f"{where}: transaction entry")
    if "transaction" not in entry:
        raise SourceError(f"{where}: transaction entry without a 'transaction' field")
    vtx = versioned_transaction_from_rpc(entry["transaction"], where=where)
    if not vtx.signatures:
        raise SourceError(f"{where}: transaction without signatures")
    meta = meta_from_rpc(require(entry, "meta", "object", f"{where}: transaction entry", nullable=True), where=where)
    if "version" in entry:  # sent only with maxSupportedTransactionVersion
        version = entry["version"]
        if version not in ("legacy", 0) or isinstance(version, bool) or (version == "legacy") == is_v0(vtx):
            raise SourceError(f"{where}: transaction entry has version {shown(version)}, but the transaction is "
                              f"{'v0' if is_v0(vtx) else 'legacy'}")
    if meta.status != TX_UNKNOWN and is_v0(vtx):
        lookups = vtx.message.address_table_lookups
        want_w = sum(len(bytes(lk.writable_indexes)) for lk in lookups)
        want_r = sum(len(bytes(lk.readonly_indexes)) for lk in lookups)
        if (len(meta.loaded_writable), len(meta.loaded_readonly)) != (want_w, want_r):
            raise SourceError(
                f"{where}: meta has {len(meta.loaded_writable)} writable + {len(meta.loaded_readonly)} readonly "
                f"loadedAddresses, but the v0 transaction's lookups load {want_w} + {want_r} "
                "(ask with maxSupportedTransactionVersion 0)")
    return ChainTransaction(
        signature=str(vtx.signatures[0]),
        slot=slot,
        index=index,
        transaction=vtx,
        meta=meta,
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
    "b58encode", "b58decode", "shown", "check", "require", "optional", "err_text", "meta_from_rpc", "versioned_transaction_from_rpc",
    "transaction_from_rpc", "err_value", "meta_to_rpc", "ui_transaction", "transaction_to_rpc",
    "memo_of", "synthetic_blockhash", "is_v0",
]
