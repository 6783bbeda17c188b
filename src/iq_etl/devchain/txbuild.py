"""Deterministic keys and real signed Solana transactions for the development chain.

Everything here is a pure function of the chain seed and labels: keypairs come from
`Keypair.from_seed(sha256(seed, label))`, made-up addresses from the same hash, recent blockhashes
from the slot. ed25519 signatures are deterministic, so the same seed gives byte-identical
transactions. Messages are compiled by solders (legacy `Message` or v0 `MessageV0` with address
lookup tables), never hand-rolled, so the wire bytes are what a Solana client would send.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Iterable, Sequence

from solders.address_lookup_table_account import AddressLookupTableAccount
from solders.hash import Hash
from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.message import Message, MessageV0, to_bytes_versioned
from solders.pubkey import Pubkey
from solders.transaction import VersionedTransaction

from iq_etl.solana.model import TX_FAILED, TX_OK, InnerInstruction, InnerInstructions, TxMeta

SYSTEM_PROGRAM = Pubkey.from_string("11111111111111111111111111111111")
VOTE_PROGRAM = Pubkey.from_string("Vote111111111111111111111111111111111111111")
COMPUTE_BUDGET_PROGRAM = Pubkey.from_string("ComputeBudget111111111111111111111111111111")
MEMO_PROGRAM = Pubkey.from_string("MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr")
TOKEN_PROGRAM = Pubkey.from_string("TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA")
SYSVAR_CLOCK = Pubkey.from_string("SysvarC1ock11111111111111111111111111111111")
SYSVAR_SLOT_HASHES = Pubkey.from_string("SysvarS1otHashes111111111111111111111111111")

LAMPORTS_PER_SIGNATURE = 5000


def _digest(seed: int, *parts: str | int | bytes) -> bytes:
    h = hashlib.sha256(b"iq-etl-devchain")
    h.update(seed.to_bytes(8, "little", signed=False))
    for part in parts:
        raw = part if isinstance(part, bytes) else str(part).encode()
        h.update(len(raw).to_bytes(4, "little"))
        h.update(raw)
    return h.digest()


_PUBKEYS: dict[bytes, Pubkey] = {}


def pubkey_of(kp: Keypair) -> Pubkey:
    """`kp.pubkey()`, cached: solders derives it from the secret on every call (~30 µs)."""
    secret = bytes(kp)[:32]
    pk = _PUBKEYS.get(secret)
    if pk is None:
        pk = _PUBKEYS[secret] = kp.pubkey()
    return pk


class KeyRing:
    """Keypairs and addresses derived from (seed, label); cached, since noise reuses a small pool."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._keypairs: dict[str, Keypair] = {}
        self._pubkeys: dict[str, Pubkey] = {}

    def keypair(self, label: str) -> Keypair:
        kp = self._keypairs.get(label)
        if kp is None:
            kp = self._keypairs[label] = Keypair.from_seed(_digest(self.seed, "keypair", label))
        return kp

    def address(self, label: str) -> Pubkey:
        """A made-up account or program address with no private key (hash of seed and label)."""
        pk = self._pubkeys.get(label)
        if pk is None:
            pk = self._pubkeys[label] = Pubkey(_digest(self.seed, "address", label))
        return pk

    def bytes_for(self, *parts: str | int) -> bytes:
        """32 deterministic bytes for anything else (session ids, merkle roots, hashes)."""
        return _digest(self.seed, "bytes", *parts)


@lru_cache(maxsize=4096)
def blockhash_for(seed: int, slot: int) -> Hash:
    """The block hash of `slot`; transactions in slot S reference the hash of an earlier slot."""
    return Hash(_digest(seed, "blockhash", slot))


@dataclass(frozen=True)
class LookupTable:
    """An address lookup table account as the chain would hold it (address and its entries)."""

    address: Pubkey
    entries: tuple[Pubkey, ...]

    def account(self) -> AddressLookupTableAccount:
        return AddressLookupTableAccount(self.address, list(self.entries))


@dataclass
class BuiltTx:
    """One signed transaction with its metadata, ready for the CAR writer."""

    wire: bytes
    signature: str
    meta: TxMeta
    version: str                 # "legacy" or "v0"
    keys: list[str]              # full key list: static, loaded writable, loaded readonly
    kind: str = ""               # what generated it (noise kind or IQ scenario step)
    tags: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Cpi:
    """An instruction executed as an inner instruction of the top-level instruction `parent`."""

    parent: int
    instruction: Instruction
    stack_height: int = 2


def compile_message(payer: Pubkey, instructions: Sequence[Instruction], blockhash: Hash,
                    lookup_tables: Sequence[LookupTable] = ()) -> tuple[Message | MessageV0, list[str], list[str]]:
    """A legacy message (no tables) or a v0 message using `lookup_tables`, plus the addresses the
    runtime would load from the tables (writable first, then readonly, table by table), which the
    transaction metadata must carry so that `static + writable + readonly` is the full key list."""
    if not lookup_tables:
        return Message.new_with_blockhash(list(instructions), payer, blockhash), [], []
    msg = MessageV0.try_compile(payer, list(instructions), [t.account() for t in lookup_tables], blockhash)
    by_address = {t.address: t for t in lookup_tables}
    writable: list[str] = []
    readonly: list[str] = []
    for lookup in msg.address_table_lookups:
        entries = by_address[lookup.account_key].entries
        writable.extend(str(entries[i]) for i in lookup.writable_indexes)
        readonly.extend(str(entries[i]) for i in lookup.readonly_indexes)
    return msg, writable, readonly


def build_tx(signers: Sequence[Keypair], instructions: Sequence[Instruction], blockhash: Hash, *,
             lookup_tables: Sequence[LookupTable] = (), cpis: Iterable[Cpi] = (),
             failed_at: int | None = None, err: str | None = None, logs: list[str] | None = None,
             compute_units: int | None = None, fee_extra: int = 0, kind: str = "") -> BuiltTx:
    """Sign `instructions` (fee payer = signers[0]) and describe the outcome in a TxMeta.

    `cpis` are placed in the metadata's inner instructions under their parent, with program and
    account indexes into the full key list. Every CPI key must appear in the parent instruction's
    accounts (as on the real runtime, where a program can only pass on accounts it was given).
    `failed_at` (top-level instruction index) marks the transaction failed with `err`.
    """
    by_key = {pubkey_of(kp): kp for kp in signers}
    payer = pubkey_of(signers[0])
    msg, writable, readonly = compile_message(payer, instructions, blockhash, lookup_tables)
    # Sign the serialized message once per required signer, in the message's signer order
    # (what VersionedTransaction(msg, signers) does, without re-deriving every public key).
    n_sign = msg.header.num_required_signatures
    message_bytes = to_bytes_versioned(msg)   # v0 messages are signed with their 0x80 version prefix
    try:
        sigs = [by_key[k].sign_message(message_bytes) for k in msg.account_keys[:n_sign]]
    except KeyError as exc:
        raise ValueError(f"no signer given for required signature of {exc}") from None
    tx = VersionedTransaction.populate(msg, sigs)
    keys = [str(k) for k in msg.account_keys] + writable + readonly
    inner: dict[int, list[InnerInstruction]] = {}
    if cpis:
        position = {k: i for i, k in enumerate(keys)}
        for cpi in cpis:
            ix = cpi.instruction
            inner.setdefault(cpi.parent, []).append(InnerInstruction(
                program_id_index=position[str(ix.program_id)],
                accounts=bytes(position[str(a.pubkey)] for a in ix.accounts),
                data=bytes(ix.data),
                stack_height=cpi.stack_height,
            ))
    status = TX_OK if failed_at is None else TX_FAILED
    meta = TxMeta(
        status=status,
        err=err if failed_at is not None else None,
        fee=LAMPORTS_PER_SIGNATURE * len(tx.signatures) + fee_extra,
        loaded_writable=writable,
        loaded_readonly=readonly,
        inner_instructions=[InnerInstructions(index=i, instructions=v) for i, v in sorted(inner.items())],
        log_messages=logs if logs is not None else [],
        compute_units=compute_units,
    )
    return BuiltTx(wire=bytes(tx), signature=str(tx.signatures[0]), meta=meta,
                   version="legacy" if not lookup_tables else "v0", keys=keys, kind=kind)


def instruction_error(index: int, custom_code: int) -> str:
    """The RPC's JSON rendering of `TransactionError::InstructionError(index, Custom(code))`."""
    return '{"InstructionError":[%d,{"Custom":%d}]}' % (index, custom_code)


def program_logs(programs: Sequence[tuple[Pubkey, str | None, int]], failed_at: int | None = None,
                 custom_code: int = 0) -> list[str]:
    """Log lines shaped like the runtime's for top-level instructions (program, log line, units)."""
    out: list[str] = []
    for i, (program, line, units) in enumerate(programs):
        pid = str(program)
        out.append(f"Program {pid} invoke [1]")
        if line:
            out.append(f"Program log: {line}")
        if failed_at == i:
            out.append(f"Program {pid} consumed {units} of {units + 200000} compute units")
            out.append(f"Program {pid} failed: custom program error: 0x{custom_code:x}")
            break
        out.append(f"Program {pid} consumed {units} of {units + 200000} compute units")
        out.append(f"Program {pid} success")
    return out


def meta_account(pubkey: Pubkey, signer: bool = False, writable: bool = False) -> AccountMeta:
    return AccountMeta(pubkey, is_signer=signer, is_writable=writable)
