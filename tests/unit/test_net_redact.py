"""URL redaction (iq_etl.net.redact). `redact_target`'s output is the `target` key of iq.exports:
these pins are what every recorded delivery was filed under, so they must never change (the IPv6 form
without brackets included). The expected strings were taken from the redactors before they moved."""
from __future__ import annotations

import logging

import pytest

from iq_etl.export import redact_target as exported_redact_target
from iq_etl.net.redact import SCRUB, redact_location, redact_target, redact_url, scrub, secrets_of, target_secrets

# (url, redact_target, redact_location, redact_url)
PINS = [
    ("https://reader.example/api/v1/uploads",
     "https://reader.example/api/v1/uploads", "https://reader.example/api/v1/uploads",
     "https://reader.example/api/v1/uploads"),
    ("https://user:hunter2@reader.example:8443/ingest?token=abc123&batch=7",
     "https://reader.example:8443/ingest?token=***&batch=7", "https://reader.example:8443/ingest",
     "https://reader.example:8443/ingest?token=***&batch=***"),
    ("http://127.0.0.1:8080/ingest?api_key=K3Y&Signature=s1g&mode=fast&flag",
     "http://127.0.0.1:8080/ingest?api_key=***&Signature=***&mode=fast&flag", "http://127.0.0.1:8080/ingest",
     "http://127.0.0.1:8080/ingest?api_key=***&Signature=***&mode=***&***"),
    ("http://[::1]:9000/ingest?access_token=t0k&x=1",
     "http://::1:9000/ingest?access_token=***&x=1", "http://[::1]:9000/ingest",
     "http://::1:9000/ingest?access_token=***&x=***"),
    ("http://[2001:db8::7]/up?AUTH=zz",
     "http://2001:db8::7/up?AUTH=***", "http://[2001:db8::7]/up", "http://2001:db8::7/up?AUTH=***"),
    ("https://u@reader.example/p?password=p%40ss&secret=&q=a=b",
     "https://reader.example/p?password=***&secret=***&q=a=b", "https://reader.example/p",
     "https://reader.example/p?password=***&secret=***&q=***"),
    ("http://reader.example/v2/abcdefghijklmnop1234?api-key=XYZ#frag",
     "http://reader.example/v2/abcdefghijklmnop1234?api-key=***", "http://reader.example/v2/abcdefghijklmnop1234",
     "http://reader.example/v2/***?api-key=***"),
    ("http://reader.example:80/", "http://reader.example:80/", "http://reader.example:80/", "http://reader.example:80/"),
    ("HTTP://Reader.Example/Path?Key=1",
     "http://reader.example/Path?Key=***", "http://reader.example/Path", "http://reader.example/Path?Key=***"),
]


@pytest.mark.parametrize("url,target,location,shown", PINS)
def test_the_three_redactions_are_pinned(url, target, location, shown):
    assert redact_target(url) == target
    assert redact_location(url) == location
    assert redact_url(url) == shown


def test_the_export_package_still_names_the_same_redactor():
    assert exported_redact_target is redact_target


@pytest.mark.parametrize("url", [u for u, *_ in PINS])
def test_no_credential_survives_any_redaction(url):
    for secret in target_secrets(url):
        for redact in (redact_target, redact_location, redact_url):
            assert secret not in redact(url), (redact.__name__, secret)
    assert "hunter2" not in redact_target(PINS[1][0]) + redact_location(PINS[1][0]) + redact_url(PINS[1][0])


def test_unparseable_urls_are_never_shown_as_they_are():
    assert redact_url("http://[::1/x?token=abc") == "<unparseable URL>"
    assert redact_location("http://user:pw@[::1/x?token=abc") == "[::1/x"


def test_secrets_are_found_and_scrubbed_longest_first():
    url = "https://me:pa55word@rpc.example/v2/abcdefghijklmnopqrst?api-key=SECRETKEY"
    found = secrets_of(url)
    assert found == sorted(found, key=len, reverse=True)
    text = f"GET {url} failed"
    cleaned = scrub(text, found)
    assert "pa55word" not in cleaned and "SECRETKEY" not in cleaned and "abcdefghijklmnopqrst" not in cleaned
    assert "rpc.example" in cleaned


def test_the_http_library_log_records_are_scrubbed():
    # A handler on the library's logger itself: what other tests did to propagation or levels (Prefect
    # and Dask configure logging in-process) does not decide what this test sees.
    logger = logging.getLogger("urllib3.connectionpool")
    seen: list[str] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = lambda record: seen.append(record.getMessage())  # type: ignore[method-assign]
    saved = logger.level, logger.disabled
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.disabled = False
    try:
        SCRUB.add(["T0PS3CRET-in-a-path"])
        logger.debug("POST /v2/%s HTTP/1.1", "T0PS3CRET-in-a-path")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.disabled = saved[1]
    assert seen == ["POST /v2/*** HTTP/1.1"]
