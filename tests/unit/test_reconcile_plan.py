"""Reconcile planning rules (plain Python): window growth, coverage subtraction, budgets, methods."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from iq_etl.reconcile.plan import IncompleteUpload, Policy, UploadState, plan_reconcile, widen
from iq_etl.solana.slots import merge_ranges as merge
from iq_etl.solana.slots import subtract

PDA = "4jB7tZybufNfgs8HRj9DiSCMYfEqb8jWkxKcnZnA1vBt"


def upload(key="k1", status="missing_chunks", first=10_000, last=10_100, account="") -> IncompleteUpload:
    return IncompleteUpload(key, status, "g2_pinocchio", account, first, last)


ranges = st.lists(st.tuples(st.integers(0, 200), st.integers(0, 40)).map(lambda t: (t[0], t[0] + t[1])), max_size=6)


def slots(rs):
    return {s for a, b in rs for s in range(a, b + 1)}


@hsettings(max_examples=300, deadline=None)
@given(ranges, ranges)
def test_subtract_matches_set_difference(wanted, covered):
    out = subtract(wanted, covered)
    assert slots(out) == slots(wanted) - slots(covered)
    assert out == merge(out)  # sorted, disjoint, non-adjacent


@hsettings(max_examples=200, deadline=None)
@given(ranges)
def test_merge_keeps_slots(rs):
    out = merge(rs)
    assert slots(out) == slots(rs)
    assert all(b + 1 < c for (_, b), (c, _) in zip(out, out[1:]))


def test_widen_clips_at_zero():
    assert widen(100, 200, 500) == (0, 700)


def test_first_attempt_uses_initial_padding():
    policy = Policy(initial_padding=1_000, growth=4, max_padding=100_000)
    plan = plan_reconcile([upload()], {}, covered=[], policy=policy)
    (u,) = plan.uploads
    assert (u.method, u.attempt, u.padding) == ("window", 1, 1_000)
    assert (u.window_first, u.window_last) == (9_000, 11_100)
    assert plan.scan_ranges == [(9_000, 11_100)]


def test_padding_grows_per_attempt_up_to_the_cap():
    policy = Policy(initial_padding=1_000, growth=4, max_padding=10_000)
    state = {"k1": UploadState("k1", 1, "window", 1_000, 9_000, 11_100)}
    (u,) = plan_reconcile([upload()], state, covered=[], policy=policy).uploads
    assert (u.attempt, u.padding) == (2, 4_000)
    state = {"k1": UploadState("k1", 2, "window", 4_000, 6_000, 14_100)}
    (u,) = plan_reconcile([upload()], state, covered=[], policy=policy).uploads
    assert (u.attempt, u.padding) == (3, 10_000)


def test_only_unscanned_slots_are_planned_and_covered_windows_widen_in_the_same_run():
    policy = Policy(initial_padding=1_000, growth=4, max_padding=100_000)
    # Everything within 2,000 slots of the upload was scanned already: 1,000 would find nothing new.
    covered = [(8_000, 12_100)]
    (u,) = plan_reconcile([upload()], {}, covered=covered, policy=policy).uploads
    assert u.padding == 4_000
    assert u.new_ranges == [(6_000, 7_999), (12_101, 14_100)]
    assert not u.exhausted


def test_fully_scanned_window_at_the_cap_is_exhausted():
    policy = Policy(initial_padding=1_000, growth=4, max_padding=4_000)
    (u,) = plan_reconcile([upload()], {}, covered=[(0, 50_000)], policy=policy).uploads
    assert (u.padding, u.exhausted, u.new_ranges) == (4_000, True, [])


def test_rpc_for_sessions_window_for_linked_lists_when_rpc_is_configured():
    items = [upload("session", account=PDA), upload("linked-tail-sig", account="")]
    plan = plan_reconcile(items, {}, covered=[], policy=Policy(), use_rpc=True)
    methods = {u.upload_key: u.method for u in plan.uploads}
    assert methods == {"session": "rpc", "linked-tail-sig": "window"}
    assert plan.session_pdas == [PDA]
    without = plan_reconcile(items, {}, covered=[], policy=Policy(), use_rpc=False)
    assert {u.method for u in without.uploads} == {"window"} and without.session_pdas == []


def test_conflicts_and_complete_uploads_are_not_searched():
    items = [upload("c", status="conflicting_chunks"), upload("done", status="complete"), upload("m")]
    plan = plan_reconcile(items, {}, covered=[])
    assert [u.upload_key for u in plan.uploads] == ["m"]
    assert [k for k, _ in plan.skipped] == ["c"]


def test_budget_defers_the_widest_windows_and_counts_shared_slots_once():
    policy = Policy(initial_padding=100, growth=4, max_padding=1_000_000, max_scan_slots=1_000)
    items = [upload("a", first=1_000, last=1_100), upload("b", first=1_050, last=1_150),
             upload("wide", first=50_000, last=60_000)]
    plan = plan_reconcile(items, {}, covered=[], policy=policy)
    assert [u.upload_key for u in plan.uploads] == ["a", "b"]
    assert plan.deferred == ["wide"]
    assert plan.scan_ranges == [(900, 1_250)]


def test_one_upload_over_budget_is_still_planned_alone():
    policy = Policy(initial_padding=100, max_padding=1_000, max_scan_slots=10)
    plan = plan_reconcile([upload()], {}, covered=[], policy=policy)
    assert len(plan.uploads) == 1 and plan.deferred == []


def test_policy_rejects_nonsense():
    with pytest.raises(ValueError):
        Policy(growth=1)
    with pytest.raises(ValueError):
        Policy(initial_padding=10, max_padding=5)


def test_windows_skip_epochs_without_an_archive():
    epoch = 432_000
    policy = Policy(initial_padding=1_000, growth=4, max_padding=100_000)
    near_start = upload(first=923 * epoch + 10, last=923 * epoch + 20)
    plan = plan_reconcile([near_start], {}, covered=[], policy=policy, epoch_available=lambda e: e == 923)
    (u,) = plan.uploads
    assert u.new_ranges == [(923 * epoch, 923 * epoch + 1_020)]
    # Everything available already scanned and the rest has no archive: grows to the cap, exhausted.
    plan = plan_reconcile([near_start], {}, covered=[(923 * epoch, 924 * epoch - 1)], policy=policy,
                          epoch_available=lambda e: e == 923)
    (u,) = plan.uploads
    assert u.exhausted and u.padding == 100_000 and u.new_ranges == []
