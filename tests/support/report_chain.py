"""A small real warehouse for the coverage report and dbt docs tests: a development chain (every
hard case: missing, conflicting, failed-only chunks, linked lists...) ingested from its CAR files in
two slot ranges with a hole between them (a scan gap), `dbt build`, then exports to three targets in
three different states: all delivered, some refused (a size limit), some failed (a closed loopback port)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

GAP_SLOTS = 40          # slots left out between the two ingested ranges
REFUSE_ABOVE = 2_000    # bytes: the second file target refuses uploads larger than this
FAILING_TARGET = "http://127.0.0.1:9"   # discard port, nothing listens: every attempt fails at once
FAILING_LIMIT = 3       # uploads tried at the failing target; the rest are never tried there


@dataclass
class ReportChain:
    manifest: Any
    settings: Any
    client: Any
    gap: tuple[int, int]            # the slots not ingested (inclusive)
    targets: dict[str, str]         # name -> target URL as recorded in iq.exports
    exported: dict[str, Any]        # name -> ExportSummary
    warehouses: Any = None          # the factory that made its warehouse

    def close(self) -> None:
        """Close the shared client (and stop the remote test server of its own, if any)."""
        from iq_etl.warehouse import client as wh

        wh.close_client()
        if self.warehouses is not None:
            self.warehouses.close()


def build_report_chain(tmp: Path, sessions_extra: int = 3) -> ReportChain:
    """Build it all in `tmp`; the shared warehouse client is left open (the caller calls `close()`).
    Module-scoped callers: its warehouse is never the session's shared remote server (which every
    test empties), but a folder, or in remote mode a server of its own."""
    from iq_etl.devchain.build import CATALOGUE_UPLOADS, build_chain
    from iq_etl.devchain.chain import car_template
    from iq_etl.export.http_target import RetryPolicy
    from iq_etl.export.runner import ExportOptions, export_ready
    from iq_etl.ingest.request import IngestRequest
    from iq_etl.ingest.run import run_ingest
    from iq_etl.transform.runner import run_dbt
    from iq_etl.warehouse import client as wh
    from iq_etl.warehouse.schema import migrate
    from tests.support.warehouse import Warehouses

    manifest = build_chain(tmp / "chain", seed=7, sessions=CATALOGUE_UPLOADS + sessions_extra)
    warehouses = Warehouses(tmp, shared=False)
    settings = warehouses.settings()
    wh.close_client()
    client = wh.get_client(settings)
    migrate(client)
    middle = (manifest.first_slot + manifest.last_slot) // 2
    gap = (middle + 1, middle + GAP_SLOTS)
    for first, last in ((manifest.first_slot, middle), (gap[1] + 1, manifest.last_slot)):
        run_ingest(settings, IngestRequest(slot_spec=f"{first}:{last}", source="car", car_url=car_template(tmp / "chain"),
                                           extra_program_ids=tuple(manifest.extra_program_ids)))
    run_dbt(settings, quiet=True)
    targets = {"files": (tmp / "exports").as_uri(), "small": (tmp / "exports-small").as_uri(),
               "down": FAILING_TARGET}
    one_try = RetryPolicy(max_attempts=1, timeout_s=5, backoff_base_s=0)
    exported = {
        "files": export_ready(settings, client, target=targets["files"], options=ExportOptions(retry=one_try)),
        "small": export_ready(settings, client, target=targets["small"],
                              options=ExportOptions(max_bytes=REFUSE_ABOVE, retry=one_try)),
        "down": export_ready(settings, client, target=targets["down"], limit=FAILING_LIMIT,
                             options=ExportOptions(retry=one_try)),
    }
    return ReportChain(manifest, settings, client, gap, {k: e.target for k, e in exported.items()}, exported,
                       warehouses)


def elements(page: str) -> list[dict[str, str]]:
    """Every start tag of an HTML page as a dict of its attributes plus `tag` (stdlib parser; used on
    the written page and on the DOM Chromium dumps after rendering it)."""
    from html.parser import HTMLParser

    found: list[dict[str, str]] = []

    class Collect(HTMLParser):
        def handle_starttag(self, tag, attrs):
            found.append({"tag": tag, **{k: v or "" for k, v in attrs}})

        handle_startendtag = handle_starttag

    Collect(convert_charrefs=True).feed(page)
    return found


def four_views(page: str) -> dict[str, list[dict[str, str]]]:
    """The report's four views found in a page: view name -> the elements that draw it."""
    els = elements(page)
    sections = {e.get("id") for e in els if e["tag"] == "section"}
    assert {"view-scan", "view-status", "view-chunks", "view-delivery"} <= sections, sections
    return {
        "scan": [e for e in els if e["tag"] == "rect" and e.get("data-kind") in ("scanned", "gap")],
        "status": [e for e in els if e["tag"] == "td" and "data-status" in e],
        "chunks": [e for e in els if e["tag"] == "rect" and "data-state" in e],
        "delivery": [e for e in els if e["tag"] == "tr" and "data-target" in e],
    }


def decode_png(data: bytes) -> tuple[int, int, list[bytes]]:
    """(width, height, rows of RGB(A) bytes) of an 8-bit truecolour PNG, non-interlaced: what
    Chromium's screenshots are. Pure Python (zlib + the five PNG row filters); Up rows, the common
    case, are added a whole row at a time with a carry-less big-integer add."""
    import struct
    import zlib

    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, [], None
    while pos < len(data):
        (size,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + size]
        pos += 12 + size
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
    assert header is not None, "no IHDR"
    width, height, depth, colour, _, _, interlace = header
    assert depth == 8 and colour in (2, 6) and interlace == 0, header
    bpp = 3 if colour == 2 else 4
    stride = width * bpp
    raw = zlib.decompress(b"".join(idat))
    assert len(raw) == height * (stride + 1), "truncated image data"
    low = int.from_bytes(b"\x7f" * stride, "big")
    high = int.from_bytes(b"\x80" * stride, "big")
    rows: list[bytes] = []
    previous = bytes(stride)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)]
        if kind == 0:
            row = bytes(line)
        elif kind == 2:
            x, p = int.from_bytes(line, "big"), int.from_bytes(previous, "big")
            row = (((x & low) + (p & low)) ^ ((x ^ p) & high)).to_bytes(stride, "big")
        else:
            out = bytearray(line)
            for i in range(stride):
                left = out[i - bpp] if i >= bpp else 0
                up = previous[i]
                if kind == 1:
                    out[i] = (out[i] + left) & 0xFF
                elif kind == 3:
                    out[i] = (out[i] + ((left + up) >> 1)) & 0xFF
                else:
                    corner = previous[i - bpp] if i >= bpp else 0
                    estimate = left + up - corner
                    da, db, dc = abs(estimate - left), abs(estimate - up), abs(estimate - corner)
                    out[i] = (out[i] + (left if da <= db and da <= dc else up if db <= dc else corner)) & 0xFF
            row = bytes(out)
        rows.append(row)
        previous = row
    return width, height, rows
