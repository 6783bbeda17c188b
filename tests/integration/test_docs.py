"""`iq-etl docs`: `dbt docs generate` through the chDB seam on a real embedded warehouse built from
the development chain: the catalog types every mart column from the warehouse, dbt writes no
`.user.yml` into the project and tracks nothing, the site works offline, and the loopback server
serves it."""
from __future__ import annotations

import json
import urllib.request

import pytest

from iq_etl.transform.docs import generate_docs, serve_docs
from iq_etl.transform.runner import DBT_PROJECT_DIR
from tests.support.report_chain import build_report_chain

MARTS = ("session_completeness", "chunk_coverage", "scan_coverage", "session_payloads", "sessions_ready_to_export")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("docs")
    chain = build_report_chain(tmp)
    try:
        yield chain, generate_docs(chain.settings, tmp / "site")
    finally:
        chain.close()


def test_catalog_has_typed_columns_for_the_marts(site):
    chain, docs = site
    catalog = json.loads((docs.path / "catalog.json").read_text())
    for mart in MARTS:
        node = catalog["nodes"][f"model.iq_etl.{mart}"]
        columns = node["columns"]
        assert columns and all(c["type"] for c in columns.values()), mart
        # the types are the warehouse's own
        types = dict(chain.client.query("SELECT name, type FROM system.columns WHERE database = 'iq' AND table = "
                                        "{t:String}", parameters={"t": mart}).result_rows)
        assert {c["name"]: c["type"] for c in columns.values()} == types, mart
    assert catalog["nodes"]["model.iq_etl.session_completeness"]["columns"]["chunks_present"]["type"] == "UInt32"
    assert docs.columns >= sum(len(catalog["nodes"][f"model.iq_etl.{m}"]["columns"]) for m in MARTS)


def test_site_is_offline_and_untracked(site):
    _, docs = site
    manifest = json.loads((docs.path / "manifest.json").read_text())
    # dbt's page loads its one remote script (a usage tracker) only when this is true
    assert manifest["metadata"]["send_anonymous_usage_stats"] is False
    assert not (DBT_PROJECT_DIR / ".user.yml").exists()
    static = docs.static_index.read_text()
    assert "model.iq_etl.session_completeness" in static   # manifest and catalog embedded: opens from file://


def test_serve_on_loopback(site):
    _, docs = site
    with serve_docs(docs.path) as url:
        assert url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(url + "index.html", timeout=10) as r:
            assert r.status == 200 and b"<html" in r.read(2000).lower()
        with urllib.request.urlopen(url + "catalog.json", timeout=10) as r:
            assert "model.iq_etl.scan_coverage" in json.loads(r.read())["nodes"]


def test_cli_docs(site, tmp_path, monkeypatch, capsys):
    from iq_etl.cli import main as cli

    chain, _ = site
    monkeypatch.setenv("IQ_CLICKHOUSE_DSN", chain.settings.clickhouse_dsn)
    monkeypatch.setenv("IQ_ETL_HOME", str(chain.settings.home))
    monkeypatch.chdir(tmp_path)
    assert cli.main(["docs", "--out", str(tmp_path / "site")]) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "site" / "static_index.html").as_uri() in out and "typed columns" in out
    assert json.loads((tmp_path / "site" / "catalog.json").read_text())["nodes"]
    assert cli.main(["docs", "--serve", "--port", "70000"]) == 1
    assert "not a TCP port" in capsys.readouterr().err
