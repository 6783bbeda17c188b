"""Synthetic Old Faithful CAR files for tests and benches: random legacy and v0 transactions (some
naming a stand-in program key, some through lookup tables) written with the devchain CAR writer.

Also runnable: `python -m tests.support.synthetic_car OUT_DIR [N_TX]` writes `OUT_DIR/{epoch}/epoch-{epoch}.car`."""
from __future__ import annotations

import random
import struct
import sys
from dataclasses import dataclass, field
from pathlib import Path

from solders.pubkey import Pubkey

from iq_etl.devchain.car_writer import CarWriter
from iq_etl.solana.model import TX_FAILED, TX_OK, TxMeta

SYSTEM_PROGRAM = bytes(32)


VOTE_PROGRAM = bytes(Pubkey.from_string("Vote111111111111111111111111111111111111111"))


CLOCK_SYSVAR = bytes(Pubkey.from_string("SysvarC1ock11111111111111111111111111111111"))


PROGRAM_KEY = bytes.fromhex("0b" * 32)  # stands in for an IQ program id


def _shortvec(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def ix_wire(program_index: int, accounts: bytes, data: bytes) -> bytes:
    return bytes([program_index]) + _shortvec(len(accounts)) + accounts + _shortvec(len(data)) + data


def tx_wire(rnd: random.Random, header: tuple[int, int, int], keys: list[bytes], ixs: list[bytes],
        lookups: list[tuple[bytes, bytes, bytes]] | None = None) -> bytes:
    body = bytes(header) + _shortvec(len(keys)) + b"".join(keys) + rnd.randbytes(32) + _shortvec(len(ixs)) + b"".join(ixs)
    if lookups is not None:
        body = b"\x80" + body + _shortvec(len(lookups)) + b"".join(
            table + _shortvec(len(w)) + w + _shortvec(len(r)) + r for table, w, r in lookups)
    return b"\x01" + rnd.randbytes(64) + body


def legacy_transfer(rnd: random.Random, extra_key: bytes | None = None) -> bytes:
    keys = [rnd.randbytes(32), rnd.randbytes(32)] + ([extra_key] if extra_key else []) + [SYSTEM_PROGRAM]
    prog = len(keys) - 1
    data = struct.pack("<IQ", 2, rnd.randrange(1, 10**9))
    ixs = [ix_wire(prog, bytes([0, 1]), data)]
    if extra_key:
        ixs.append(ix_wire(2, bytes([0]), b"iq"))  # the extra key is invoked as a program
    return tx_wire(rnd, (1, 0, 1 + bool(extra_key)), keys, ixs)


def vote(rnd: random.Random) -> bytes:
    keys = [rnd.randbytes(32), rnd.randbytes(32), CLOCK_SYSVAR, VOTE_PROGRAM]
    data = struct.pack("<I", 2) + rnd.randbytes(90)
    return tx_wire(rnd, (1, 0, 2), keys, [ix_wire(3, bytes([1, 2, 0]), data)])


def v0_with_lookups(rnd: random.Random, n_writable: int = 2, n_readonly: int = 2, static_extra: bytes | None = None,
                    n_instructions: int = 2) -> bytes:
    keys = [rnd.randbytes(32), rnd.randbytes(32)] + ([static_extra] if static_extra else []) + [rnd.randbytes(32)]
    prog = len(keys) - 1
    ixs = [ix_wire(prog, bytes(range(min(len(keys) + n_writable + n_readonly, 8))), rnd.randbytes(rnd.randrange(8, 60)))
           for _ in range(n_instructions)]
    lookups = [(rnd.randbytes(32), bytes(range(n_writable)), bytes(range(n_writable, n_writable + n_readonly)))]
    return tx_wire(rnd, (1, 0, 1), keys, ixs, lookups)


def b58(key: bytes) -> str:
    return str(Pubkey.from_bytes(key))


@dataclass
class SyntheticChain:
    car_path: Path
    transactions: int = 0
    slots: list[int] = field(default_factory=list)
    wanted_signatures: list[str] = field(default_factory=list)  # in file order
    first_slot: int = 0
    last_slot: int = 0


def build_synthetic_car(root: Path, n_tx: int, *, epoch: int = 5, tx_per_slot: int = 200, wanted_every: int = 200,
                        v0_share: float = 0.3, vote_share: float = 0.3, seed: int = 7, skip_every: int = 7,
                        max_frame_bytes: int = 1 << 20, log_lines: int = 3, index: bool = True) -> SyntheticChain:
    """Write `root/{epoch}/epoch-{epoch}.car` with n_tx transactions. Every `wanted_every`-th
    transaction mentions PROGRAM_KEY; for v0 ones half of those only through a lookup table."""
    rnd = random.Random(seed)
    path = Path(root) / str(epoch) / f"epoch-{epoch}.car"
    chain = SyntheticChain(path)
    slot = epoch * 432_000
    chain.first_slot = slot
    parent = None
    written = 0
    with CarWriter(path, max_frame_bytes=max_frame_bytes) as writer:
        while written < n_tx:
            if skip_every and slot % skip_every == skip_every - 1 and slot != chain.first_slot:
                slot += 1  # a skipped slot
                continue
            txs = []
            for _ in range(min(tx_per_slot, n_tx - written)):
                written += 1
                wanted = wanted_every and written % wanted_every == 0
                r = rnd.random()
                loaded_w: list[bytes] = []
                loaded_r: list[bytes] = []
                if r < v0_share:
                    in_table = wanted and rnd.random() < 0.5
                    wire = v0_with_lookups(rnd, static_extra=PROGRAM_KEY if wanted and not in_table else None)
                    loaded_w = [rnd.randbytes(32), rnd.randbytes(32)]
                    loaded_r = [PROGRAM_KEY if in_table else rnd.randbytes(32), rnd.randbytes(32)]
                elif r < v0_share + vote_share and not wanted:
                    wire = vote(rnd)
                else:
                    wire = legacy_transfer(rnd, extra_key=PROGRAM_KEY if wanted else None)
                failed = rnd.random() < 0.05
                meta = TxMeta(status=TX_FAILED if failed else TX_OK,
                              err='{"InstructionError":[0,{"Custom":1}]}' if failed else None,
                              fee=5000, loaded_writable=[b58(k) for k in loaded_w],
                              loaded_readonly=[b58(k) for k in loaded_r],
                              log_messages=[f"Program log: line {i} {rnd.random():.6f}" for i in range(log_lines)],
                              compute_units=rnd.randrange(150, 200_000))
                txs.append((wire, meta))
                if wanted:
                    chain.wanted_signatures.append(b58_signature(wire))
            writer.add_slot(slot, parent, 1_700_000_000 + slot, slot - 1000, txs)
            chain.slots.append(slot)
            chain.transactions += len(txs)
            parent = slot
            slot += 1
    chain.last_slot = chain.slots[-1]
    if not index:
        (path.parent / f"epoch-{epoch}-slot-ranges.raw").unlink()
    return chain


def b58_signature(wire: bytes) -> str:
    from solders.signature import Signature

    return str(Signature.from_bytes(wire[1:65]))


if __name__ == "__main__":
    out = Path(sys.argv[1])
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 100_000
    chain = build_synthetic_car(out, n)
    print(f"{chain.car_path}: {chain.transactions} transactions in {len(chain.slots)} slots "
          f"{chain.first_slot}..{chain.last_slot}; {len(chain.wanted_signatures)} mention {b58(PROGRAM_KEY)}")
