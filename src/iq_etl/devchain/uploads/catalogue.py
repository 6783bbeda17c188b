"""The hard-case catalogue (`Catalogue`, one method per deliberate hard case) and `ordinary_upload`,
which fills the rest of --sessions with plain uploads of every generation."""
from __future__ import annotations

from typing import Callable

from iq_etl.devchain.manifest import AWAITING_FINALIZE, COMPLETE, CONFLICTING_CHUNKS, MISSING_CHUNKS, TOTAL_MISMATCH
from iq_etl.devchain.uploads.files import b64, make_file, metadata_json
from iq_etl.devchain.uploads.scenarios import G2_CHUNK_BYTES, G3_CHUNK_CHARS, Scenarios
from iq_etl.devchain.uploads.state import UploadState


class Catalogue:
    """The deliberate hard cases: one method per scenario, each making one upload (two for
    g2_reused_account) that starts at `start` in the upload window unless it needs a special place."""

    def __init__(self, sc: Scenarios):
        self.sc = sc
        self.plan = sc.plan
        self.rng = sc.plan.rng
        self.t = sc.t

    def file(self, kind: str, size: int) -> tuple[bytes, str]:
        return make_file(self.rng, kind, size)

    # G2 Pinocchio and legacy ----------------------------------------------------------------------
    def _g2(self, scenario: str, start: int, *, order=None, gap=(1, 3), legacy=False, method=0, session=None,
            with_root=True, finalize_at: int | None = None, finalize=True, bundle=False, size=2400, variant=None,
            v0=False, cpi=False, budget=False, status=COMPLETE, missing=(), extra: Callable | None = None,
            tags=()) -> UploadState:
        sc, plan = self.sc, self.plan
        original, _ = self.file("png" if method == 0 else "bin", size)
        up = sc.g2_state(scenario, legacy, original, session=session, method=method)
        up.tag(*tags)
        n = len(up.pieces)
        order = list(range(n)) if order is None else order
        slots = sc.slots_from(start, n + 1, gap)
        if finalize_at is None:
            fin_slot, chunk_slots = slots[-1], slots[:-1]
        else:
            fin_slot, chunk_slots = slots[finalize_at], slots[:finalize_at] + slots[finalize_at + 1:]
        for k, i in enumerate(order):
            if i not in missing:
                plan.send(up, chunk_slots[k], [sc.g2_chunk(up, i, variant=variant)], v0=v0, cpi=cpi, budget=budget)
        if extra:
            extra(up, slots)
        if finalize:
            sc.send_finalize(up, fin_slot, sc.g2_finalize(up, with_root, bundle), v0=v0, cpi=cpi)
        plan.finish(up, status, list(missing))
        return up

    def g2_basic(self, start):
        self._g2("g2_basic", start, budget=True, tags=("multi_instruction_tx",))

    def g2_out_of_order(self, start):
        # Spread over a third of the upload window, starting at its beginning.
        span = max(16, (self.t.main_last - self.t.main_first) // 3)
        n = 8
        order = [5, 2, 7, 0, 3, 6, 1, 4]
        self._g2("g2_out_of_order", self.t.main_first + 1, order=order, gap=(span // n, span // n + 2),
                 size=G2_CHUNK_BYTES * n, with_root=False, tags=("chunks_out_of_order", "chunks_across_many_slots"))

    def g2_duplicate_same(self, start):
        def extra(up, slots):
            self.plan.send(up, self.t.at(slots[-2] + 1), [self.sc.g2_chunk(up, 1)], salt=3)
        self._g2("g2_duplicate_same", start, extra=extra, gap=(2, 3), tags=("duplicate_chunk_same_content",))

    def g2_conflict(self, start):
        def extra(up, slots):
            other = bytes(b ^ 0x5A for b in up.pieces[2])
            self.plan.send(up, self.t.at(slots[-2] + 1), [self.sc.g2_chunk(up, 2, other)], salt=3)
        self._g2("g2_conflict", start, extra=extra, gap=(2, 3), status=CONFLICTING_CHUNKS,
                 tags=("duplicate_index_different_content",))

    def g2_failed_resent(self, start):
        sc, plan = self.sc, self.plan
        original, _ = self.file("png", 2000)
        up = sc.g2_state("g2_failed_resent", False, original)
        up.tag("failed_chunk_resent")
        n = len(up.pieces)
        slots = sc.slots_from(start, n + 2, (2, 3))
        failed = plan.send(up, slots[0], [sc.g2_chunk(up, 1)], fail=True)
        up.mark("failed_chunk_resent", failed.signature)
        for k, i in enumerate(i for i in range(n) if i != 1):
            plan.send(up, slots[1 + k], [sc.g2_chunk(up, i)])
        plan.send(up, slots[-2], [sc.g2_chunk(up, 1)], salt=5)
        sc.send_finalize(up, slots[-1], sc.g2_finalize(up, True))
        plan.finish(up, COMPLETE)

    def g2_missing(self, start):
        self._g2("g2_missing", start, size=G2_CHUNK_BYTES * 6 - 10, missing=(3,), status=MISSING_CHUNKS,
                 tags=("chunk_never_lands",))

    def g2_finalize_first(self, start):
        self._g2("g2_finalize_first", start, finalize_at=2, gap=(2, 4), tags=("finalize_before_chunks",))

    def g2_reused_account(self, start):
        session = self.sc.keys.address("g2-session/reused")
        first = self._g2("g2_reused_account_first", start, session=session, tags=("session_account_reused",))
        after = max(s for s, _, _ in first.txs) + 2
        self._g2("g2_reused_account_second", after, session=session, tags=("session_account_reused",))

    def g2_never_finalized(self, start):
        self._g2("g2_never_finalized", start, finalize=False, status=AWAITING_FINALIZE, tags=("never_finalized",))

    def g2_method_raw(self, start):
        self._g2("g2_method_raw", start, method=1, tags=("g2_method_raw",))

    def g2_string_variant(self, start):
        self._g2("g2_string_variant", start, variant="string", tags=("pinocchio_string_variant",))

    def g2_cpi_lookup(self, start):
        self._g2("g2_cpi_lookup", start, v0=True, cpi=True, tags=("cpi_inner_instruction",))

    def g2_two_per_tx(self, start):
        sc, plan = self.sc, self.plan
        original, _ = self.file("png", 1400)
        up = sc.g2_state("g2_two_per_tx", False, original, chunk_bytes=G2_CHUNK_BYTES // 2)
        up.tag("two_iq_instructions_one_tx")
        n = len(up.pieces)
        slots = sc.slots_from(start, (n + 1) // 2 + 1)
        for k in range(0, n, 2):
            plan.send(up, slots[k // 2], [sc.g2_chunk(up, i) for i in range(k, min(k + 2, n))])
        sc.send_finalize(up, slots[-1], sc.g2_finalize(up, True))
        plan.finish(up, COMPLETE)

    def legacy_basic(self, start):
        self._g2("legacy_basic", start, legacy=True)

    def legacy_bundle(self, start):
        self._g2("legacy_bundle", start, legacy=True, bundle=True, with_root=False,
                 tags=("finalize_bundle_without_session_id",))

    # G3 sessions ----------------------------------------------------------------------------------
    def _g3(self, scenario, start, *, kind="png", size=2600, text=None, original=None, filetype=None,
            filename=None, status=COMPLETE, missing=None, tags=(), **kw) -> UploadState:
        if text is None:
            original, filetype = self.file(kind, size)
            text = b64(original)
        if filename is None:
            filename = f"{scenario}.{filetype.split('/')[-1]}"
        up = self.sc.g3_session(scenario, start, joined=text, original=original, filetype=filetype,
                                filename=filename, **kw)
        up.tag(*tags)
        self.plan.finish(up, status, missing)
        return up

    def g3_basic_lookup(self, start):
        self._g3("g3_basic_lookup", start, v0=True)

    def g3_traversal_name(self, start):
        self._g3("g3_traversal_name", start, filename="../../etc/passwd", finaliser="db_code_in",
                 tags=("hostile_filename",))

    def g3_control_name(self, start):
        self._g3("g3_control_name", start, filename="sub/dir/\x00evil\x1b[31m\n\tname\\..\\x.txt",
                 finaliser="db_instruction_code_in", tags=("hostile_filename",))

    def g3_out_of_order(self, start):
        self._g3("g3_out_of_order", start, size=2500, order=[3, 0, 4, 2, 1], gap=(1, 6),
                 tags=("chunks_out_of_order",))

    def g3_total_mismatch(self, start):
        self._g3("g3_total_mismatch", start, size=1800, meta_total=9, status=TOTAL_MISMATCH, tags=("total_mismatch",))

    def g3_far_window(self, start):
        self._g3("g3_far_window", self.t.far_first, size=2000, gap=(2, 5), tags=("far_slot_window",))

    def g3_chunk_far(self, start):
        # Siblings at the start of the upload window; the last chunk far_gap slots later.
        near = self.sc.slots_from(self.t.main_first + 3, 5, (1, 2))
        far = self.t.at(near[-2] + self.t.far_gap)
        self._g3("g3_chunk_far", start, size=1500, slots=near[:-2] + [far, self.t.at(far + 2)],
                 tags=("chunk_far_from_siblings", "chunks_across_many_slots"))

    def g3_failed_never_resent(self, start):
        self._g3("g3_failed_never_resent", start, size=2000, fail_only=frozenset({1}), status=MISSING_CHUNKS,
                 missing=[1], tags=("failed_chunk_never_resent",))

    def g3_awaiting(self, start):
        self._g3("g3_awaiting", start, size=1600, finalize=False, status=AWAITING_FINALIZE, tags=("never_finalized",))

    def g3_conflict(self, start):
        sc, plan = self.sc, self.plan
        original, filetype = self.file("png", 2000)
        up = sc.g3_state("g3_conflict", b64(original), original, filetype, "conflict.png")
        up.tag("duplicate_index_different_content", "duplicate_chunk_same_content")
        n = len(up.pieces)
        slots = sc.slots_from(start, n + 4, (2, 3))
        plan.send(up, slots[0], [sc.g3_create(up)])
        for i in range(n):
            plan.send(up, slots[1 + i], [sc.g3_chunk(up, i)])
        plan.send(up, slots[-3], [sc.g3_chunk(up, 0, up.pieces[0][::-1])], salt=2)
        plan.send(up, slots[-2], [sc.g3_chunk(up, 1)], salt=2)
        up.metadata_raw = metadata_json(filetype, "conflict.png", n)
        up.declared_totals = {"session_finalize": n, "metadata": n}
        sc.send_finalize(up, slots[-1], sc.g3_code_in(up, "user_inventory_code_in", on_chain_path=up.session_account,
                                                       session_total=n))
        plan.finish(up, CONFLICTING_CHUNKS)

    def g3_data_url(self, start):
        original, _ = self.file("png", 1400)
        self._g3("g3_data_url", start, text=b"data:image/png;base64," + b64(original), original=original,
                 filetype="image/png", tags=("data_url_payload",))

    def g3_plain_text(self, start):
        original, _ = self.file("text", 1500)
        self._g3("g3_plain_text", start, text=original, original=original, filetype="text/plain",
                 filename="notes.txt", tags=("plain_text_payload",))

    def g3_short(self, start):
        original, _ = self.file("bin", 60)   # base64 of 80 characters: the gateway keeps the text
        self._g3("g3_short", start, text=b64(original), original=original, filetype="application/octet-stream",
                 tags=("short_base64_not_decoded",))

    def g3_u32_trailer(self, start):
        self._g3("g3_u32_trailer", start, size=1500, variant="u32", finaliser="wallet_connection_code_in",
                 tags=("python_sdk_u32_trailer",))

    def g3_free(self, start):
        self._g3("g3_free", start, size=1200, finaliser="user_inventory_code_in_for_free", filename="résumé 📄.pdf",
                 tags=("free_finaliser",))

    def g3_big_meta(self, start):
        self._g3("g3_big_meta", start, size=1500, big_logs_at=1, tags=("meta_spans_dataframes",))

    def g3_cpi(self, start):
        self._g3("g3_cpi", start, size=1500, cpi=True, tags=("cpi_inner_instruction",))

    def g3_cpi_lookup(self, start):
        self._g3("g3_cpi_lookup", start, size=1500, cpi=True, v0=True, tags=("cpi_inner_instruction",))

    # linked lists and inline ----------------------------------------------------------------------
    def _linked(self, scenario, generation, start, *, size=2200, filename=None, status=COMPLETE, missing=None,
                tags=(), swaps=(), **kw):
        original, filetype = self.file("png", size)
        n = -(-len(b64(original)) // (G3_CHUNK_CHARS - 100))
        if swaps:
            order = list(range(n))
            for a, b in swaps:
                order[a], order[b] = order[b], order[a]
            kw["land_order"] = order
        up = self.sc.linked(scenario, generation, start, joined=b64(original), original=original, filetype=filetype,
                            filename=filename or f"{scenario}.png", **kw)
        up.tag(*tags)
        self.plan.finish(up, status, missing)

    def g3_linked(self, start):
        self._linked("g3_linked", "g3", start, filename="x" * 180 + "/" + "y" * 120 + ".png",
                     tags=("hostile_filename",))

    def g3_linked_out_of_order(self, start):
        self._linked("g3_linked_out_of_order", "g3", start, size=2600, swaps=((0, 2), (1, 3)),
                     tags=("linked_pieces_land_out_of_order",))

    def g1_linked(self, start):
        self._linked("g1_linked", "g1", start, size=2000, swaps=((1, 2),),
                     tags=("linked_pieces_land_out_of_order",))

    def g1_broken(self, start):
        self._linked("g1_broken", "g1", start, size=2000, never_lands=frozenset({1}), status=MISSING_CHUNKS,
                     missing=[1], tags=("linked_list_broken",))

    def g3_inline(self, start):
        original, filetype = self.file("json", 300)
        up = self.sc.inline("g3_inline", start, original, filetype, "inline.json")
        self.plan.finish(up, COMPLETE)


CATALOGUE = [
    "g2_out_of_order", "g3_chunk_far",          # these two pick their own start (window beginning)
    "g2_basic", "g2_duplicate_same", "g2_conflict", "g2_failed_resent", "g2_missing", "g2_finalize_first",
    "g2_reused_account", "g2_never_finalized", "g2_method_raw", "g2_string_variant", "g2_cpi_lookup",
    "g2_two_per_tx", "legacy_basic", "legacy_bundle",
    "g3_basic_lookup", "g3_traversal_name", "g3_control_name", "g3_out_of_order", "g3_total_mismatch",
    "g3_failed_never_resent", "g3_awaiting", "g3_conflict", "g3_data_url", "g3_plain_text", "g3_short",
    "g3_u32_trailer", "g3_free", "g3_big_meta", "g3_cpi", "g3_cpi_lookup",
    "g3_linked", "g3_linked_out_of_order", "g1_linked", "g1_broken", "g3_inline",
    "g3_far_window",                            # the far window, after everything else
]
CATALOGUE_UPLOADS = len(CATALOGUE) + 1          # g2_reused_account makes two uploads
ORDINARY_NAMES = ("photo.png", "data.json", "readme.txt", "résumé 📄.pdf", "a b c.bin", "CON", "..", "")


def ordinary_upload(sc: Scenarios, start: int, i: int) -> None:
    """A plain complete upload of some generation (mostly G3 sessions, as on mainnet since 2026-02)."""
    plan, rng = sc.plan, sc.plan.rng
    roll = rng.random()
    if roll < 0.6:
        original, filetype = make_file(rng, rng.choice(("png", "json", "text", "bin")), rng.randint(300, 6000))
        filename = rng.choice(ORDINARY_NAMES + (f"upload-{i}.{filetype.split('/')[-1]}",) * 6)
        text = b64(original)
        n = (len(text) + G3_CHUNK_CHARS - 1) // G3_CHUNK_CHARS
        order = None
        if n > 2 and rng.random() < 0.3:
            order = list(range(n))
            rng.shuffle(order)
        up = sc.g3_session(f"ordinary_g3_{i}", start, joined=text, original=original, filetype=filetype,
                           filename=filename, finaliser=rng.choice(("user_inventory_code_in", "db_code_in")),
                           order=order, v0=rng.random() < 0.3)
        if order is not None and order != sorted(order):
            up.tag("chunks_out_of_order")
        if filename in ("..", "CON"):
            up.tag("hostile_filename")
    elif roll < 0.85:
        legacy = roll >= 0.8
        original, _ = make_file(rng, rng.choice(("png", "bin")), rng.randint(200, 4000))
        up = sc.g2_state(f"ordinary_{'legacy' if legacy else 'g2'}_{i}", legacy, original)
        slots = sc.slots_from(start, len(up.pieces) + 1)
        v0 = rng.random() < 0.3 and not legacy
        for k in range(len(up.pieces)):
            plan.send(up, slots[k], [sc.g2_chunk(up, k)], v0=v0, budget=rng.random() < 0.5)
        sc.send_finalize(up, slots[-1], sc.g2_finalize(up, rng.random() < 0.5), v0=v0)
    elif roll < 0.95:
        original, filetype = make_file(rng, "png", rng.randint(300, 3000))
        generation = rng.choice(("g1", "g3"))
        up = sc.linked(f"ordinary_linked_{generation}_{i}", generation, start, joined=b64(original),
                       original=original, filetype=filetype, filename=f"linked-{i}.png")
    else:
        original, filetype = make_file(rng, "json", rng.randint(100, 400))
        up = sc.inline(f"ordinary_inline_{i}", start, original, filetype, f"inline-{i}.json")
    plan.finish(up, COMPLETE)
