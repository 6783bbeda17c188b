"""Unrelated traffic around the IQ uploads, shaped like mainnet's: vote transactions, system
transfers, multi-instruction transactions (compute budget + transfer + memo) and about 30% v0
"swap" transactions whose pool accounts come from address lookup tables (their loaded keys live
only in the compressed metadata, so a key pre-filter must look there). A few percent fail.

Keypairs come from small pools built once, so a block costs one message compile and one ed25519
signature per transaction. Every transaction is a real signed solders transaction.
"""
from __future__ import annotations

import base64
import random
import struct

from solders.compute_budget import set_compute_unit_limit, set_compute_unit_price
from solders.instruction import AccountMeta, Instruction
from solders.pubkey import Pubkey
from solders.system_program import TransferParams, transfer

from iq_etl.devchain.txbuild import (
    COMPUTE_BUDGET_PROGRAM,
    MEMO_PROGRAM,
    SYSTEM_PROGRAM,
    SYSVAR_CLOCK,
    TOKEN_PROGRAM,
    VOTE_PROGRAM,
    BuiltTx,
    Cpi,
    KeyRing,
    LookupTable,
    blockhash_for,
    build_tx,
    instruction_error,
)

# Shares of each kind (by weight); v0 transactions with lookup tables are about 30% of all traffic.
MIX = (("vote", 0.38), ("transfer", 0.14), ("multi", 0.18), ("swap_v0", 0.30))
FAIL_RATE = 0.03
VALIDATORS = 48
PAYERS = 96
POOLS = 12
TOWER_SYNC = 14      # VoteInstruction::TowerSync
# 31 lockouts as a compact short_vec: (varint offset 1, confirmation count 31..1)
_LOCKOUTS = bytes([31]) + b"".join(bytes([1, 31 - i]) for i in range(31))


class NoiseGenerator:
    def __init__(self, seed: int, keys: KeyRing, *, iq_program_ids: list[Pubkey], router: Pubkey):
        self.seed = seed
        self.keys = keys
        self.rng = random.Random(int.from_bytes(keys.bytes_for("noise-rng")[:8], "little"))
        # (keypair, its public key): solders re-derives a public key on every .pubkey() call.
        self.validators = [(kp, kp.pubkey(), keys.address(f"vote-account/{i}"))
                           for i, kp in enumerate(keys.keypair(f"validator/{i}") for i in range(VALIDATORS))]
        self.payers = [(kp, kp.pubkey()) for kp in (keys.keypair(f"payer/{i}") for i in range(PAYERS))]
        self.dex = keys.address("program/dex")
        self.router = router
        self.iq_program_ids = iq_program_ids
        self.token_accounts = {pk: (keys.address(f"ata/{i}/a"), keys.address(f"ata/{i}/b"))
                               for i, (_, pk) in enumerate(self.payers)}
        self.pools: list[tuple[LookupTable, list[Pubkey]]] = []
        for i in range(POOLS):
            accounts = [keys.address(f"pool/{i}/{role}") for role in
                        ("state", "vault_a", "vault_b", "mint_a", "mint_b", "oracle")]
            table = LookupTable(keys.address(f"alt/pool/{i}"), tuple(accounts + [TOKEN_PROGRAM, SYSVAR_CLOCK]))
            self.pools.append((table, accounts))
        # A table that also lists IQ program ids (as plain entries; programs may not be invoked from it).
        self.iq_listing_table = LookupTable(keys.address("alt/aggregator"),
                                            tuple([keys.address("aggregator/state")] + list(iq_program_ids)))
        self.kinds = [k for k, _ in MIX]
        self.weights = [w for _, w in MIX]
        self.counts: dict[str, int] = {}
        self._signatures: set[bytes] = set()

    def lookup_tables(self) -> dict[str, list[str]]:
        tables = [t for t, _ in self.pools] + [self.iq_listing_table]
        return {str(t.address): [str(e) for e in t.entries] for t in tables}

    def _bh(self, slot: int, k: int):
        return blockhash_for(self.seed, slot - 1 - (k % 4))

    def block(self, slot: int, count: int) -> list[BuiltTx]:
        """`count` noise transactions for `slot`, votes first as leaders pack them, the rest mixed."""
        rng = self.rng
        kinds = rng.choices(self.kinds, self.weights, k=count)
        kinds.sort(key=lambda k: k != "vote")
        out = []
        votes = 0
        for k, kind in enumerate(kinds):
            if kind == "vote":
                tx = self.vote(slot, votes)
                votes += 1
            else:
                fail = rng.random() < FAIL_RATE
                tx = getattr(self, kind)(slot, k, fail)
                if fail:
                    self._count("failed")
            self._count(kind)
            out.append(tx)
        return out

    def _count(self, kind: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1

    def _unique(self, tx: BuiltTx) -> BuiltTx:
        sig = tx.wire[1:65]
        if sig in self._signatures:
            raise ValueError(f"noise produced the same transaction twice: {tx.signature}")
        self._signatures.add(sig)
        return tx

    # -- kinds ---------------------------------------------------------------------------------------
    def vote(self, slot: int, j: int) -> BuiltTx:
        identity, identity_key, vote_account = self.validators[j % VALIDATORS]
        voted = slot - 1 - j // VALIDATORS
        root = voted - 32
        # TowerSync: root u64, compact lockouts (short_vec of (varint offset, u8 confirmations)),
        # bank hash, Option<i64> timestamp, block id: the shape of a mainnet vote.
        data = (struct.pack("<IQ", TOWER_SYNC, root) + _LOCKOUTS + bytes(blockhash_for(self.seed, voted))
                + b"\x01" + struct.pack("<q", 1_770_000_000 + voted * 2 // 5)
                + bytes(blockhash_for(self.seed, voted + 10**12)))
        ix = Instruction(VOTE_PROGRAM, data, [AccountMeta(vote_account, False, True), AccountMeta(identity_key, True, False)])
        logs = [f"Program {VOTE_PROGRAM} invoke [1]", f"Program {VOTE_PROGRAM} success"]
        return self._unique(build_tx([identity], [ix], self._bh(slot, j), logs=logs, compute_units=2100, kind="vote"))

    def transfer(self, slot: int, k: int, fail: bool) -> BuiltTx:
        (a, a_key), (_, b_key) = self.rng.sample(self.payers, 2)
        ix = transfer(TransferParams(from_pubkey=a_key, to_pubkey=b_key, lamports=self.rng.randrange(1, 10**10)))
        logs = [f"Program {SYSTEM_PROGRAM} invoke [1]"]
        logs.append("Transfer: insufficient lamports" if fail else f"Program {SYSTEM_PROGRAM} success")
        if fail:
            logs.append(f"Program {SYSTEM_PROGRAM} failed: custom program error: 0x1")
        return self._unique(build_tx([a], [ix], self._bh(slot, k), failed_at=0 if fail else None,
                                     err=instruction_error(0, 1), logs=logs, compute_units=150, kind="transfer"))

    def multi(self, slot: int, k: int, fail: bool) -> BuiltTx:
        (a, a_key), (_, b_key) = self.rng.sample(self.payers, 2)
        price = self.rng.randrange(1, 500_000)
        ixs = [set_compute_unit_limit(self.rng.choice((50_000, 200_000, 1_400_000))), set_compute_unit_price(price),
               transfer(TransferParams(from_pubkey=a_key, to_pubkey=b_key, lamports=self.rng.randrange(1, 10**9))),
               Instruction(MEMO_PROGRAM, f"gm {slot}-{k}".encode(), [AccountMeta(a_key, True, False)])]
        logs = []
        for pid in (COMPUTE_BUDGET_PROGRAM, COMPUTE_BUDGET_PROGRAM, SYSTEM_PROGRAM):
            logs += [f"Program {pid} invoke [1]", f"Program {pid} success"]
        logs += [f"Program {MEMO_PROGRAM} invoke [1]", f'Program log: Memo (len {len(ixs[3].data)}): "gm {slot}-{k}"']
        if fail:
            logs.append(f"Program {MEMO_PROGRAM} failed: invalid instruction data")
        else:
            logs += [f"Program {MEMO_PROGRAM} consumed 6000 of 200000 compute units", f"Program {MEMO_PROGRAM} success"]
        err = '{"InstructionError":[3,"InvalidInstructionData"]}'
        return self._unique(build_tx([a], ixs, self._bh(slot, k), failed_at=3 if fail else None, err=err, logs=logs,
                                     compute_units=6450, fee_extra=price // 1000, kind="multi"))

    def swap_v0(self, slot: int, k: int, fail: bool, *, big_logs: int = 0, list_iq: bool = False) -> BuiltTx:
        payer, payer_key = self.rng.choice(self.payers)
        table, (state, vault_a, vault_b, mint_a, mint_b, oracle) = self.rng.choice(self.pools)
        ata_a, ata_b = self.token_accounts[payer_key]
        amount = self.rng.randrange(1, 10**12)
        accounts = [AccountMeta(payer_key, True, True), AccountMeta(ata_a, False, True), AccountMeta(ata_b, False, True),
                    AccountMeta(state, False, True), AccountMeta(vault_a, False, True), AccountMeta(vault_b, False, True),
                    AccountMeta(mint_a, False, False), AccountMeta(mint_b, False, False), AccountMeta(oracle, False, False),
                    AccountMeta(TOKEN_PROGRAM, False, False), AccountMeta(SYSVAR_CLOCK, False, False)]
        tables = [table]
        if list_iq:
            # An aggregator that passes IQ program ids as plain accounts: the key pre-filter sees them
            # (through the metadata), but the transaction holds no IQ instruction.
            accounts += [AccountMeta(pid, False, False) for pid in self.iq_program_ids]
            tables.append(self.iq_listing_table)
        swap = Instruction(self.dex, bytes.fromhex("f8c69e91e17587c8") + struct.pack("<QQ", amount, amount * 99 // 100),
                           accounts)
        ixs = [set_compute_unit_limit(300_000), set_compute_unit_price(self.rng.randrange(1, 2_000_000)), swap]
        cpis = [] if fail else [
            Cpi(2, Instruction(TOKEN_PROGRAM, b"\x03" + struct.pack("<Q", amount),
                               [AccountMeta(ata_a, False, True), AccountMeta(vault_a, False, True),
                                AccountMeta(payer_key, True, False)])),
            Cpi(2, Instruction(TOKEN_PROGRAM, b"\x03" + struct.pack("<Q", amount * 99 // 100),
                               [AccountMeta(vault_b, False, True), AccountMeta(ata_b, False, True),
                                AccountMeta(state, False, False)])),
        ]
        logs = []
        for _ in range(2):
            logs += [f"Program {COMPUTE_BUDGET_PROGRAM} invoke [1]", f"Program {COMPUTE_BUDGET_PROGRAM} success"]
        logs += [f"Program {self.dex} invoke [1]", "Program log: Instruction: Swap"]
        if fail:
            logs += [f"Program {self.dex} consumed 31000 of 300000 compute units",
                     f"Program {self.dex} failed: custom program error: 0x1771"]
        else:
            for _ in range(2):
                logs += [f"Program {TOKEN_PROGRAM} invoke [2]", "Program log: Instruction: Transfer",
                         f"Program {TOKEN_PROGRAM} consumed 4645 of 250000 compute units", f"Program {TOKEN_PROGRAM} success"]
            logs += [f"Program {self.dex} consumed 52000 of 300000 compute units", f"Program {self.dex} success"]
        if big_logs:
            rnd = random.Random(slot * 104729 + k)
            logs += ["Program data: " + base64.b64encode(rnd.randbytes(180)).decode() for _ in range(big_logs)]
        return self._unique(build_tx([payer], ixs, self._bh(slot, k), lookup_tables=tables, cpis=cpis,
                                     failed_at=2 if fail else None, err=instruction_error(2, 6001), logs=logs,
                                     compute_units=31000 if fail else 61590, kind="swap_v0"))

    def iq_unknown_instruction(self, slot: int, k: int) -> BuiltTx:
        """A successful call of the G3 program with an instruction no IQ decoder knows (an admin
        instruction outside the upload protocol): ingest must keep it in undecoded_instructions."""
        import hashlib

        payer, payer_key = self.rng.choice(self.payers)
        g3 = self.iq_program_ids[-1]
        tag = hashlib.sha256(b"global:update_config").digest()[:8]
        ix = Instruction(g3, tag + struct.pack("<Q", 42), [AccountMeta(payer_key, True, True)])
        logs = [f"Program {g3} invoke [1]", "Program log: Instruction: UpdateConfig", f"Program {g3} success"]
        return self._unique(build_tx([payer], [ix], self._bh(slot, k), logs=logs, compute_units=1200,
                                     kind="iq_undecodable"))

    def iq_account_only_legacy(self, slot: int, k: int) -> BuiltTx:
        """A legacy transaction whose router instruction lists IQ program ids as plain accounts."""
        payer, payer_key = self.rng.choice(self.payers)
        ix = Instruction(self.router, b"noop\0\0\0\0", [AccountMeta(payer_key, True, True)]
                         + [AccountMeta(pid, False, False) for pid in self.iq_program_ids])
        logs = [f"Program {self.router} invoke [1]", f"Program {self.router} success"]
        return self._unique(build_tx([payer], [ix], self._bh(slot, k), logs=logs, compute_units=900,
                                     kind="iq_account_only"))
