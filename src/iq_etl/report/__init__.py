"""The coverage report: one self-contained HTML page (`iq-etl report`, and a Prefect link artifact
after each pipeline / reconcile run) showing scanned slot runs vs gaps per epoch, uploads by status x
generation, a chunk map per incomplete upload and the delivery state per export target.

`report.data` reads the warehouse (parameterised queries, bounded); `report.html` renders the page.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clickhouse_connect.driver import Client

from iq_etl.report.data import Limits, report_data
from iq_etl.report.html import render_html
from iq_etl.settings import Settings

REPORT_FILE = "index.html"


def default_report_dir(settings: Settings) -> Path:
    """Next to the warehouse it describes: `report/` beside an embedded warehouse's folder (for the
    default warehouse, `<IQ_ETL_HOME>/report`); `<IQ_ETL_HOME>/report` for a remote one. Never the
    current folder."""
    path = settings.warehouse_path
    return (path.parent / "report") if path is not None else (Path(settings.home) / "report").resolve()


@dataclass(frozen=True)
class WrittenReport:
    path: Path
    data: dict[str, Any]

    @property
    def url(self) -> str:
        return self.path.resolve().as_uri()


def write_report(client: Client, out_dir: Path, limits: Limits | None = None,
                 settings: Settings | None = None) -> WrittenReport:
    """Read the warehouse, render the page and write it to `out_dir/index.html` (atomically: a reader
    never sees half a page). With `settings`, the page names its warehouse and shows the coverage of
    the configured program set."""
    data = report_data(client, limits) if settings is None else \
        report_data(client, limits, warehouse=settings.warehouse_name, program_ids=settings.program_ids)
    page = render_html(data)
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / REPORT_FILE
    fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=".tmp-", suffix=".html")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(page)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return WrittenReport(path, data)


__all__ = ("Limits", "WrittenReport", "default_report_dir", "report_data", "render_html", "write_report")
