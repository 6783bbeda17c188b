"""dbt docs for the models, generated against the configured warehouse (`iq-etl docs`).

`generate_docs(settings, out_dir)` runs `dbt docs generate --static` in-process, like
`transform.runner.run_dbt` runs `dbt build`: on the embedded warehouse through the chDB seam
(transform/chdb_seam.py), so dbt's catalog query reads the real tables and `catalog.json` carries
every column's ClickHouse type; on a remote one over HTTP. The site lands in `out_dir`
(default `<iq-etl home>/dbt/docs`): `index.html` + `manifest.json` + `catalog.json` (index.html
fetches the two JSON files, so it needs a web server: `serve_docs`), and `static_index.html`, the
same page with both embedded, which opens from a file:// URL.

Offline: dbt's page inlines its scripts and styles; its one remote load, a usage tracker script,
only happens when the manifest says `send_anonymous_usage_stats: true`, and it is always false here
(DBT_SEND_ANONYMOUS_USAGE_STATS=false and the flag): that also means dbt writes no `.user.yml` cookie
into the project folder (profiles.yml lives there).
"""
from __future__ import annotations

import contextlib
import functools
import http.server
import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from iq_etl.settings import Settings
from iq_etl.transform.runner import (
    DbtResult,
    TransformError,
    _failure_message,
    _node_results,
    dbt_args,
    dbt_home,
    invoke_dbt,
    remote_target_env,
)

SITE_FILES = ("index.html", "manifest.json", "catalog.json")


def default_docs_dir(settings: Settings) -> Path:
    return dbt_home(settings) / "docs"


@dataclass(frozen=True)
class DocsSite:
    path: Path                 # the folder holding index.html, manifest.json, catalog.json
    nodes: int                 # models, sources... with a catalog entry
    columns: int               # columns typed in the catalog

    @property
    def static_index(self) -> Path:
        return self.path / "static_index.html"


def docs_args(settings: Settings, out_dir: Path) -> list[str]:
    """`docs generate` arguments: the runner's (project, profiles, target, log path), with the site in out_dir."""
    args = dbt_args(settings, "docs", None, False, None, None)
    args.insert(1, "generate")
    at = args.index("--target-path")
    args[at + 1] = str(out_dir)
    return args + ["--static", "--no-send-anonymous-usage-stats", "--quiet"]


def generate_docs(settings: Settings, out_dir: Path | None = None) -> DocsSite:
    """Run `dbt docs generate` against the warehouse; raise TransformError when dbt fails."""
    out = Path(out_dir).resolve() if out_dir is not None else default_docs_dir(settings)
    out.mkdir(parents=True, exist_ok=True)
    dbt_home(settings).mkdir(parents=True, exist_ok=True)
    args = docs_args(settings, out)
    env = {"DBT_SEND_ANONYMOUS_USAGE_STATS": "false", "DBT_PARTIAL_PARSE": "true"}
    if settings.embedded:
        env["IQ_DBT_TARGET"] = "embedded"
    else:
        env.update(remote_target_env(settings.clickhouse_dsn, settings.clickhouse_cluster))
    outcome = invoke_dbt(settings, env, args)
    if not outcome.success:
        result = DbtResult(success=False, command="docs generate",
                           target="embedded" if settings.embedded else "remote", elapsed_s=0.0,
                           nodes=_node_results(getattr(outcome, "result", None)))
        raise TransformError(_failure_message(result, outcome, settings))
    missing = [name for name in SITE_FILES if not (out / name).is_file()]
    if missing:
        raise TransformError(f"dbt docs generate finished but {', '.join(missing)} is missing in {out}")
    catalog = json.loads((out / "catalog.json").read_text())
    entries = list(catalog.get("nodes", {}).values()) + list(catalog.get("sources", {}).values())
    return DocsSite(path=out, nodes=len(entries), columns=sum(len(e.get("columns") or {}) for e in entries))


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass


@contextlib.contextmanager
def serve_docs(site_dir: Path, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve the generated site (static files only) on loopback in a background thread; yields its URL."""
    handler = functools.partial(_QuietHandler, directory=str(site_dir))
    server = http.server.ThreadingHTTPServer((host, port), handler)
    thread = threading.Thread(target=server.serve_forever, name="iq-etl-docs", daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
