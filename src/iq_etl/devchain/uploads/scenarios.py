"""`Scenarios`: upload builders per generation (G2 Pinocchio and legacy sessions, G3 sessions,
G1/G3 linked lists, inline G3 uploads)."""
from __future__ import annotations

import json

from solders.instruction import Instruction
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from iq_etl.devchain.txbuild import SYSTEM_PROGRAM, BuiltTx
from iq_etl.devchain.uploads.accounts import _accounts, check_position
from iq_etl.devchain.uploads.files import b64, g1_offset, merkle_root, metadata_json, split_text
from iq_etl.devchain.uploads.planner import UploadPlanner
from iq_etl.devchain.uploads.state import IxPart, UploadState
from iq_etl.protocol import IQRecord, encode

G3_CHUNK_CHARS = 700             # text per post_chunk / send_code piece (fits one transaction)
G2_CHUNK_BYTES = 480             # raw bytes per Pinocchio / legacy chunk (base64 on the wire)


class Scenarios:
    """Upload builders per generation; `catalogue.Catalogue` combines them into the hard cases."""

    def __init__(self, plan: UploadPlanner):
        self.plan = plan
        self.keys = plan.keys
        self.p = plan.programs
        self.t = plan.timeline

    def slots_from(self, start: int, count: int, gap: tuple[int, int] = (1, 3)) -> list[int]:
        """`count` increasing live slots from `start`, each `gap` (1-3) slots after the previous."""
        out: list[int] = []
        s = start
        for _ in range(count):
            s = self.t.at(s)
            if out and s <= out[-1]:
                raise ValueError(f"no live slot left after {out[-1]} (chain too short for this upload)")
            out.append(s)
            s += self.plan.rng.randint(*gap)
        return out

    # -- G2 Pinocchio / legacy sessions -----------------------------------------------------------
    def g2_state(self, scenario: str, legacy: bool, original: bytes, *, session: Pubkey | None = None,
                 method: int = 0, chunk_bytes: int = G2_CHUNK_BYTES) -> UploadState:
        plan = self.plan
        number = plan.next_number()
        session = session or self.keys.address(f"g2-session/{number}")
        session_id = self.keys.bytes_for("session-id", number)[:16]
        pieces = split_text(original, chunk_bytes)
        up = UploadState(number=number, scenario=scenario, generation="g2_legacy" if legacy else "g2_pinocchio",
                         shape="session", program=self.p.g2_legacy if legacy else self.p.g2, user=plan.user(),
                         original=original, joined_intended=original, expected_total=len(pieces),
                         session_account=str(session), session_id=session_id, method=method, pieces=pieces)
        up.upload_key = f"{session}:{session_id.hex()}"
        return up

    def g2_chunk(self, up: UploadState, index: int, payload: bytes | None = None, variant: str | None = None) -> IxPart:
        payload = up.pieces[index] if payload is None else payload
        legacy = up.generation == "g2_legacy"
        session = Pubkey.from_string(up.session_account)
        rec = IQRecord(generation=up.generation, kind="chunk", instruction="post_hybrid_chunk" if legacy else "chunk",
                       session_account=up.session_account, session_id=up.session_id, chunk_index=index,
                       method=up.method, payload=payload, variant=variant)
        accounts = _accounts(3, 1, session, up.user.pubkey(), {2: (SYSTEM_PROGRAM, False)})
        check_position(rec, accounts, session)
        return IxPart(rec, up.program, accounts, chunk_payload=payload, index=index)

    def g2_finalize(self, up: UploadState, with_root: bool, bundle: bool = False) -> IxPart:
        legacy = up.generation == "g2_legacy"
        if with_root:
            up.merkle_root = merkle_root(up.pieces)
        name = "finalize_bundle" if bundle else ("finalize_hybrid_session" if legacy else "finalize")
        rec = IQRecord(generation=up.generation, kind="finalize", instruction=name,
                       session_account=up.session_account, session_id=None if bundle else up.session_id,
                       total_chunks=up.expected_total, merkle_root=up.merkle_root)
        up.declared_totals["finalize"] = up.expected_total
        session = Pubkey.from_string(up.session_account)
        accounts = _accounts(2, 1, session, up.user.pubkey(), {})
        check_position(rec, accounts, session)
        return IxPart(rec, up.program, accounts)

    def send_finalize(self, up: UploadState, slot: int, part: IxPart, **kw) -> BuiltTx:
        built = self.plan.send(up, slot, [part], **kw)
        up.finalize = (slot, built.signature)
        return built

    # -- G3 sessions ------------------------------------------------------------------------------
    def g3_state(self, scenario: str, joined: bytes, original: bytes, filetype: str, filename: str) -> UploadState:
        plan = self.plan
        number = plan.next_number()
        user = plan.user()
        seq = plan.next_g3_seq(user)
        pda, _ = Pubkey.find_program_address(
            [b"bundlemY}AGBJiqLabs", bytes(self.p.g3), bytes(user.pubkey()), seq.to_bytes(8, "little")], self.p.g3)
        pieces = split_text(joined, G3_CHUNK_CHARS)
        up = UploadState(number=number, scenario=scenario, generation="g3", shape="session", program=self.p.g3,
                         user=user, original=original, joined_intended=joined, expected_total=len(pieces),
                         session_account=str(pda), seq=seq, method=0, filetype=filetype, filename=filename,
                         pieces=pieces)
        up.upload_key = str(pda)
        return up

    def g3_pdas(self, user: Pubkey) -> tuple[Pubkey, Pubkey]:
        g3 = self.p.g3
        user_state, _ = Pubkey.find_program_address([b"usermY}AGBJiqLabs", bytes(g3), bytes(user)], g3)
        inventory, _ = Pubkey.find_program_address([b"inventorymY}AGBJiqLabs", bytes(user)], g3)
        return user_state, inventory

    def g3_create(self, up: UploadState) -> IxPart:
        rec = IQRecord(generation="g3", kind="create_session", instruction="create_session",
                       session_account=up.session_account, seq=up.seq)
        session = Pubkey.from_string(up.session_account)
        user_state, _ = self.g3_pdas(up.user.pubkey())
        accounts = _accounts(4, 2, session, up.user.pubkey(), {1: (user_state, True), 3: (SYSTEM_PROGRAM, False)})
        check_position(rec, accounts, session)
        return IxPart(rec, self.p.g3, accounts)

    def g3_chunk(self, up: UploadState, index: int, text: bytes | None = None, variant: str | None = None) -> IxPart:
        text = up.pieces[index] if text is None else text
        session = Pubkey.from_string(up.session_account)
        rec = IQRecord(generation="g3", kind="chunk", instruction="post_chunk", session_account=up.session_account,
                       chunk_index=index, payload=text, method=0, decode_break=0, variant=variant)
        accounts = _accounts(2, 1, session, up.user.pubkey(), {})
        check_position(rec, accounts, session)
        return IxPart(rec, self.p.g3, accounts, chunk_payload=text, index=index)

    def g3_code_in(self, up: UploadState, finaliser: str, *, on_chain_path: str, session_total: int | None,
                   tail_tx: str | None = None, payload: bytes | None = None) -> IxPart:
        """A code-in finaliser with up.metadata_raw. Session uploads pass SessionFinalize{seq, total};
        linked lists and inline uploads pass None and leave the optional session account absent
        (filled with the program id, as the TS SDK's toAccountMeta does)."""
        user = up.user.pubkey()
        _, inventory = self.g3_pdas(user)
        has_session = session_total is not None
        session = Pubkey.from_string(up.session_account) if has_session else None
        metadata = json.loads(up.metadata_raw)
        n = up.number

        def made_up(name: str) -> tuple[Pubkey, bool]:
            return self.keys.address(f"g3/{name}/{n}"), True

        db_root_id = table_seed = proof = None
        if finaliser == "user_inventory_code_in":
            count, roles = 6, {1: (inventory, True), 2: (SYSTEM_PROGRAM, False), 3: made_up("receiver"),
                               5: made_up("iq_ata")}
        elif finaliser == "user_inventory_code_in_for_free":
            count, roles = 5, {1: (inventory, True), 2: (self.keys.address("g3/config"), False),
                               3: (SYSTEM_PROGRAM, False)}
            proof = tuple(self.keys.bytes_for("proof", n, i) for i in range(3))
        else:
            db_root_id = f"dbroot-{n % 3}".encode()
            table_seed = f"table-{n}".encode()
            roles = {1: (inventory, True), 2: (SYSTEM_PROGRAM, False), 3: made_up("receiver"), 5: made_up("iq_ata"),
                     6: made_up("db_root"), 7: made_up("table")}
            if finaliser == "db_code_in":
                count = 10
                roles.update({8: made_up("signer_ata"), 9: made_up("metadata_account")})
            elif finaliser == "db_instruction_code_in":
                count = 11
                roles.update({8: made_up("instruction_table"), 9: made_up("signer_ata"),
                              10: made_up("metadata_account")})
            else:  # wallet_connection_code_in: 7 is the connection table
                count = 8
        if not has_session:
            roles[4] = (self.p.g3, False)
        accounts = _accounts(count, 4 if has_session else None, session, user, roles)
        total = session_total if has_session else metadata.get("total_chunks")
        rec = IQRecord(generation="g3", kind="finalize", instruction=finaliser,
                       session_account=up.session_account if has_session else None,
                       total_chunks=total, seq=up.seq if has_session else None, payload=payload,
                       on_chain_path=on_chain_path, metadata=metadata, metadata_raw=up.metadata_raw, tail_tx=tail_tx,
                       db_root_id=db_root_id, table_seed=table_seed, proof=proof)
        if has_session:
            check_position(rec, accounts, session)
        return IxPart(rec, self.p.g3, accounts)

    def g3_session(self, scenario: str, start: int, *, joined: bytes, original: bytes, filetype: str,
                   filename: str, finaliser: str = "user_inventory_code_in", order: list[int] | None = None,
                   gap: tuple[int, int] = (1, 3), v0: bool = False, cpi: bool = False, meta_total: int | None = None,
                   finalize: bool = True, fail_only: frozenset[int] = frozenset(), variant: str | None = None,
                   big_logs_at: int | None = None, slots: list[int] | None = None) -> UploadState:
        """A whole G3 session upload: create_session, post_chunk in `order`, then the code-in."""
        up = self.g3_state(scenario, joined, original, filetype, filename)
        n = len(up.pieces)
        order = list(range(n)) if order is None else order
        slots = slots or self.slots_from(start, n + 2, gap)
        self.plan.send(up, slots[0], [self.g3_create(up)], v0=v0)
        for k, i in enumerate(order):
            self.plan.send(up, slots[1 + k], [self.g3_chunk(up, i, variant=variant)], fail=i in fail_only,
                           v0=v0, cpi=cpi, big_logs=150 if big_logs_at == i else 0,
                           budget=self.plan.rng.random() < 0.4)
        if finalize:
            total_meta = n if meta_total is None else meta_total
            up.metadata_raw = metadata_json(filetype, filename, total_meta)
            up.declared_totals = {"session_finalize": n, "metadata": total_meta}
            part = self.g3_code_in(up, finaliser, on_chain_path=up.session_account, session_total=n)
            self.send_finalize(up, slots[-1], part, v0=v0)
        return up

    # -- linked lists (G1 and G3 send_code) -------------------------------------------------------
    def linked(self, scenario: str, generation: str, start: int, *, joined: bytes, original: bytes,
               filetype: str, filename: str, land_order: list[int] | None = None,
               never_lands: frozenset[int] = frozenset()) -> UploadState:
        """send_code pieces from "Genesis", each naming the previous piece's signature, then the
        index: G3 code-in with on_chain_path = tail signature, or G1 db_code_in(handle, tail_tx, ...)."""
        plan = self.plan
        number = plan.next_number()
        user = plan.user()
        program = self.p.g1 if generation == "g1" else self.p.g3
        pieces = split_text(joined, G3_CHUNK_CHARS - 100)     # room for the 88-character before_tx
        n = len(pieces)
        up = UploadState(number=number, scenario=scenario, generation=generation, shape="linked_list",
                         program=program, user=user, original=original, joined_intended=joined, expected_total=n,
                         method=0, filetype=filetype, filename=filename if generation == "g3" else "", pieces=pieces)
        land_order = list(range(n)) if land_order is None else land_order
        slots = self.slots_from(start, n + 1)
        piece_slot = {i: slots[k] for k, i in enumerate(land_order)}
        if generation == "g1":
            store, _ = Pubkey.find_program_address([b"dbmY}9OV5jAGBJiq6900", bytes(user.pubkey())], program)
        else:
            store, _ = Pubkey.find_program_address([b"codemY}AGBJiqLabs", bytes(user.pubkey())], program)
        piece_accounts = _accounts(3, None, None, user.pubkey(), {1: (store, True), 2: (SYSTEM_PROGRAM, False)})
        # Each piece names the previous piece's signature. Signing is deterministic, so a piece's
        # signature is known before it is sent and pieces can land in any order (or never).
        before = "Genesis"
        parts: list[tuple[IxPart, str]] = []
        for i, piece in enumerate(pieces):
            rec = IQRecord(generation=generation, kind="linked_piece", instruction="send_code", payload=piece,
                           before_tx=before, method=0, decode_break=0)
            part = IxPart(rec, program, piece_accounts, chunk_payload=piece, index=i)
            before = _presign(plan, up.user, piece_slot[i], part)
            parts.append((part, before))
        tail = before
        for i in land_order:
            if i not in never_lands:
                plan.send(up, piece_slot[i], [parts[i][0]], expect_signature=parts[i][1])
        up.upload_key = tail
        if generation == "g1":
            rec = IQRecord(generation="g1", kind="linked_index", instruction="db_code_in",
                           handle=f"user{number}", tail_tx=tail, type_field=filetype, offset=g1_offset(pieces))
            part = IxPart(rec, program, piece_accounts)
        else:
            up.metadata_raw = metadata_json(filetype, filename, n)
            up.declared_totals = {"metadata": n}
            part = self.g3_code_in(up, "user_inventory_code_in", on_chain_path=tail, session_total=None, tail_tx=tail)
        self.send_finalize(up, slots[-1], part)
        return up

    # -- inline G3 upload -------------------------------------------------------------------------
    def inline(self, scenario: str, start: int, original: bytes, filetype: str, filename: str) -> UploadState:
        """A code-in with an empty on_chain_path: the whole file is metadata.data (base64 text)."""
        plan = self.plan
        text = b64(original)
        up = UploadState(number=plan.next_number(), scenario=scenario, generation="g3", shape="inline",
                         program=self.p.g3, user=plan.user(), original=original, joined_intended=text,
                         expected_total=1, method=0, filetype=filetype, filename=filename, pieces=[text])
        up.metadata_raw = metadata_json(filetype, filename, 1, data=text.decode())
        up.declared_totals = {"metadata": 1}
        part = self.g3_code_in(up, "user_inventory_code_in", on_chain_path="", session_total=None, payload=text)
        part.chunk_payload, part.index = text, 0
        built = self.send_finalize(up, self.t.at(start), part)
        up.upload_key = built.signature
        return up


def _presign(plan: UploadPlanner, user: Keypair, slot: int, part: IxPart) -> str:
    """The signature `plan.send` will produce for this one-instruction legacy transaction in `slot`."""
    from solders.message import Message
    from solders.transaction import VersionedTransaction

    ix = Instruction(part.program, encode(part.record), part.accounts)
    msg = Message.new_with_blockhash([ix], user.pubkey(), plan.blockhash(slot))
    return str(VersionedTransaction(msg, [user]).signatures[0])
