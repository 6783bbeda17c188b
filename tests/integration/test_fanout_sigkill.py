"""Crash safety of the parallel ingest (`--threads 2`, worker processes), whose finished sub-ranges are
settled in groups (rows flushed, then the group's `done` ledger rows): a process SIGKILLed after it
received half of the sub-ranges leaves every sub-range it recorded `done` with all its rows, and a
resumed run ends with exactly the rows of an uninterrupted single-process ingest."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap

import pytest

from tests.support.prefect import build_devchain
from tests.support.warehouse import folder_dsn

CHILD = textwrap.dedent("""
    import json, os, signal, sys
    from iq_etl.ingest.fanout import PoolFanout
    from iq_etl.ingest.request import IngestRequest
    from iq_etl.ingest.run import run_ingest
    from iq_etl.settings import load_settings
    from iq_etl.warehouse import client as wh

    args = json.loads(sys.argv[1])
    import iq_etl.ingest.run as ingest_run
    ingest_run.SETTLE_INTERVAL_S = args["settle_s"]   # 0: settle after every sub-range, so some are recorded

    class DieAfter:
        '''--threads 2's fan-out; this process SIGKILLs itself once run_ingest took the n-th outcome.'''
        writes_remotely = False

        def __init__(self, inner, n):
            self.inner, self.n = inner, n

        def run(self, job, todo):
            for i, item in enumerate(self.inner.run(job, todo), 1):
                yield item
                if i == self.n:
                    os.kill(os.getpid(), signal.SIGKILL)

    settings = load_settings({"IQ_CLICKHOUSE_DSN": args["dsn"], "IQ_ETL_HOME": args["home"]}, dotenv=None)
    with wh.Warehouse(settings) as client, PoolFanout(2, "process") as pool:
        fanout = DieAfter(pool, args["die_after"]) if args["die_after"] else pool
        summary = run_ingest(settings, IngestRequest(slot_spec=args["spec"], car_url=args["car_url"],
                             extra_program_ids=tuple(args["extra"]), subrange_slots=100), client=client, fanout=fanout)
    print("SUMMARY", json.dumps({"incomplete": summary.incomplete, "skipped": summary.skipped_ranges,
                                 "ranges": len(summary.ranges)}))
""")

ROWS = "SELECT slot, signature, ix_index, inner_index, kind, payload FROM iq.raw_instructions FINAL ORDER BY ALL"


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    return build_devchain(tmp_path_factory.mktemp("chain"))


def _run(tmp_path, folder, chain, die_after: int, settle_s: float = 1.0) -> subprocess.CompletedProcess:
    from iq_etl.devchain.chain import car_template

    chain_dir, manifest = chain
    args = {"dsn": folder_dsn(tmp_path / folder), "home": str(tmp_path / folder),
            "spec": f"{manifest.first_slot}:{manifest.last_slot}", "car_url": car_template(chain_dir),
            "extra": list(manifest.extra_program_ids), "die_after": die_after, "settle_s": settle_s}
    (tmp_path / folder).mkdir(exist_ok=True)
    (tmp_path / folder / ".env").write_text("")
    return subprocess.run([sys.executable, "-c", CHILD, json.dumps(args)], cwd=tmp_path / folder,
                          capture_output=True, text=True, timeout=600)


def _query(tmp_path, folder, sql: str) -> list[tuple]:
    from iq_etl.settings import load_settings
    from iq_etl.warehouse import client as wh

    settings = load_settings({"IQ_CLICKHOUSE_DSN": folder_dsn(tmp_path / folder),
                              "IQ_ETL_HOME": str(tmp_path / folder)}, dotenv=tmp_path / "no.env")
    with wh.Warehouse(settings) as client:
        return client.query(sql).result_rows


def test_sigkill_after_half_the_subranges_then_resume_gives_the_same_rows(chain, tmp_path):
    reference = _run(tmp_path, "reference", chain, die_after=0)
    assert reference.returncode == 0, reference.stderr[-3000:]
    expected = _query(tmp_path, "reference", ROWS)
    assert expected

    killed = _run(tmp_path, "crash", chain, die_after=12, settle_s=0.0)   # 24 sub-ranges of 100 slots
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    done = _query(tmp_path, "crash", "SELECT first_slot, last_slot FROM iq.scan_ranges FINAL WHERE status = 'done'")
    assert 1 <= len(done) < 24, done
    rows_now = set(_query(tmp_path, "crash", ROWS))
    for first, last in done:   # a sub-range recorded done has every one of its rows
        wanted = {r for r in expected if first <= r[0] <= last}
        assert wanted <= rows_now, (first, last)

    resumed = _run(tmp_path, "crash", chain, die_after=0)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads(resumed.stdout.split("SUMMARY ", 1)[1])
    assert not summary["incomplete"] and summary["skipped"] == len(done) and summary["ranges"] == 24 - len(done)
    assert _query(tmp_path, "crash", ROWS) == expected
