"""The coverage report rendered by a real browser: Debian's Chromium, headless, opens the page written
from a development-chain warehouse (file://, offline), takes a 1400x3000 screenshot and dumps the
DOM after rendering. The four views' elements are in the rendered DOM, and the screenshot is a real
image showing them: the colours of scanned runs, gaps, conflicting cells and deliveries are drawn.

Needs `chromium` on PATH (`apt-get install chromium`; .ci/run installs it). A copy of the screenshot
is kept in .iq-etl/test-artifacts/report-chromium.png for people to look at."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from iq_etl.report import write_report
from iq_etl.report.html import CELL_COLOURS, DELIVERY_PARTS
from tests.support.report_chain import build_report_chain, decode_png, four_views

REPO = Path(__file__).resolve().parents[2]
WIDTH, HEIGHT = 1400, 3000


def _chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    pytest.fail("chromium not found: install Debian's package (apt-get install -y chromium); .ci/run does")


# Chromium stays on this machine: without these it looked up accounts.google.com, clients2.google.com
# and redirector.gvt1.com at the machine's nameserver (seen with `strace -f -e trace=connect,sendto`)
# although --disable-background-networking was given. The resolver rule answers every name but
# loopback's as not found, so no query leaves; the rest turn off the services that ask.
LOOPBACK_ONLY = ("--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-default-apps", "--disable-domain-reliability", "--no-pings",
                 "--disable-client-side-phishing-detection", "--disable-breakpad", "--no-default-browser-check",
                 "--disable-features=OptimizationHints,MediaRouter,Translate,AutofillServerCommunication,"
                 "CertificateTransparencyComponentUpdater,InterestFeedContentSuggestions")


def _run(chromium: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                           "--disable-extensions", "--hide-scrollbars", *LOOPBACK_ONLY,
                           f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=180, check=False)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report-chromium")
    chain = build_report_chain(tmp)
    try:
        written = write_report(chain.client, tmp / "report")
    finally:
        chain.close()
    chromium = _chromium()
    shot = tmp / "report.png"
    done = _run(chromium, tmp / "profile", f"--screenshot={shot}", f"--window-size={WIDTH},{HEIGHT}", written.url)
    assert shot.is_file(), f"no screenshot (exit {done.returncode}): {done.stderr[-2000:]}"
    dom = _run(chromium, tmp / "profile", "--virtual-time-budget=2000", "--dump-dom", written.url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    keep = REPO / ".iq-etl" / "test-artifacts"
    keep.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shot, keep / "report-chromium.png")
    return chain, written, shot.read_bytes(), dom.stdout


def test_rendered_dom_has_the_four_views(rendered):
    chain, written, _, dom = rendered
    views = four_views(dom)
    assert chain.gap in [(int(e["data-first"]), int(e["data-last"])) for e in views["scan"] if e["data-kind"] == "gap"]
    assert sum(int(e["data-uploads"]) for e in views["status"]) == sum(
        r["uploads"] for r in written.data["by_status_generation"]["rows"])
    assert {"present", "conflicting"} <= {e["data-state"] for e in views["chunks"]}
    assert {e["data-target"] for e in views["delivery"]} == set(chain.targets.values())


def test_screenshot_is_a_real_image_of_the_report(rendered):
    _, _, png, _ = rendered
    width, height, rows = decode_png(png)
    assert (width, height) == (WIDTH, HEIGHT)
    bpp = len(rows[0]) // width
    colours: dict[bytes, int] = {}
    for row in rows[::2]:
        for x in range(0, len(row), bpp * 2):
            pixel = row[x:x + 3]
            colours[pixel] = colours.get(pixel, 0) + 1
    assert len(colours) > 50, "the screenshot is (almost) one colour"

    def drawn(hex_colour: str) -> int:
        return colours.get(bytes.fromhex(hex_colour.lstrip("#")), 0)

    # scanned runs / present cells / delivered (green), gaps / missing (red), conflicting (purple),
    # refused (amber), never tried (grey): each view put its colour on screen
    for name, colour in [("scanned, present, delivered", CELL_COLOURS["present"]),
                         ("gap, missing", CELL_COLOURS["missing"]), ("conflicting", CELL_COLOURS["conflicting"]),
                         ("refused", dict((k, c) for k, c, _ in DELIVERY_PARTS)["refused"])]:
        assert drawn(colour) > 20, f"{name} ({colour}) not on the screenshot"
