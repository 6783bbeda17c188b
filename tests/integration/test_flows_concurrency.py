"""The optional Prefect global concurrency limit `iq-etl-warehouse`, on a real (ephemeral) Prefect API.

It serialises runs across machines and workers (remote warehouse, several workers); it is only used
when it exists on the server, so a plain setup sees no warning and no API round trips beyond one read."""
from __future__ import annotations

import threading
import time

import pytest

pytest.importorskip("prefect")

from prefect.client.orchestration import get_client  # noqa: E402
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate  # noqa: E402

from iq_etl.orchestration.locking import prefect_global_limit  # noqa: E402
from tests.support.net import wait_until  # noqa: E402
from tests.support.prefect import prefect_api  # noqa: E402,F401 - fixture


def test_missing_limit_is_skipped(prefect_api):  # noqa: F811
    with prefect_global_limit("iq-etl-no-such-limit", timeout_s=5) as used:
        assert used is False
    with prefect_global_limit(None, timeout_s=5) as used:
        assert used is False


def test_existing_limit_serialises_holders(prefect_api):  # noqa: F811
    name = "iq-etl-warehouse-test"
    with get_client(sync_client=True) as client:
        client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
    events: list[str] = []
    release_a = threading.Event()
    errors: list[BaseException] = []

    def holder(tag: str, release: threading.Event | None) -> None:
        try:
            with prefect_global_limit(name, timeout_s=60) as used:
                events.append(f"{tag} acquired (limit used: {used})")
                if release is not None:
                    release.wait(60)
                events.append(f"{tag} released")
        except BaseException as exc:  # noqa: BLE001 - surfaced by the assertion below
            errors.append(exc)

    a = threading.Thread(target=holder, args=("A", release_a))
    a.start()
    wait_until(lambda: "A acquired (limit used: True)" in events, "A to take the slot")
    b = threading.Thread(target=holder, args=("B", None))
    b.start()
    # B is blocked on the limit's only slot until A lets go: its slot request is pending on the server.
    time.sleep(0.5)  # give B the chance to (wrongly) get in; the assertion is on order, not on time
    assert "B acquired (limit used: True)" not in events
    release_a.set()
    a.join(60), b.join(60)
    assert not errors, errors
    assert events == ["A acquired (limit used: True)", "A released", "B acquired (limit used: True)", "B released"]
