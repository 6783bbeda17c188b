"""URLs safe to print or store: credentials (userinfo, tokens in the query or the path) never reach
a message, a log record or the warehouse.

Three policies, one per use, each pinned by tests/unit/test_net_redact.py:
- `redact_url`: messages and logs of the RPC client (every query value and token-like path part hidden);
- `redact_location`: names of CAR archives (no query, no fragment);
- `redact_target`: the export target as stored in `iq.exports.target`. It is a ledger key: its output
  must never change (an IPv6 host, for one, keeps the unbracketed form it has always had).
`secrets_of` and `SCRUB` remove what a URL holds from free text and from the HTTP library's records."""
from __future__ import annotations

import logging
import re
import threading
from typing import Iterable
from urllib.parse import SplitResult, urlsplit, urlunsplit

_SECRETISH = re.compile(r"^[A-Za-z0-9_\-]{16,}$")
# A query value is a secret in a stored target when its key contains one of these.
SECRET_QUERY_KEYS = ("token", "key", "secret", "password", "passwd", "auth", "signature", "sig")


def _host(parts: SplitResult, *, brackets: bool) -> str:
    """host[:port] without userinfo (raises ValueError on a bad port)."""
    host = parts.hostname or ""
    if brackets and ":" in host:
        host = f"[{host}]"
    if parts.port:
        host = f"{host}:{parts.port}"
    return host


def redact_url(url: str) -> str:
    """The URL safe to print: no userinfo, every query value hidden, long token-like path parts hidden.

    Providers put API keys in the query (`?api-key=`), in the path (`/v2/<key>`, `/<token>/`) or in
    userinfo; all three are removed. Host and port stay, so the message still says where."""
    try:
        parts = urlsplit(url)
        host = _host(parts, brackets=False)
    except ValueError:
        return "<unparseable URL>"
    path = "/".join("***" if _SECRETISH.match(seg) else seg for seg in parts.path.split("/"))
    query = "&".join(
        (kv.split("=", 1)[0] + "=***") if "=" in kv else "***" for kv in parts.query.split("&") if kv
    )
    return urlunsplit((parts.scheme, host, path, query, ""))


def redact_location(url: str) -> str:
    """The URL safe to print: no user/password, no query string (may hold tokens), no fragment."""
    try:
        parts = urlsplit(url)
        host = _host(parts, brackets=True)
    except ValueError:
        return url.split("?", 1)[0].rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def redact_target(url: str) -> str:
    """The target as recorded in iq.exports: no user/password, secret-looking query values masked.
    A ledger key: never change what this returns."""
    parts = urlsplit(url)
    netloc = _host(parts, brackets=False)
    query = "&".join(
        f"{k}=***" if any(s in k.lower() for s in SECRET_QUERY_KEYS) else (f"{k}={v}" if sep else k)
        for k, sep, v in (item.partition("=") for item in parts.query.split("&") if item)
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def target_secrets(url: str) -> list[str]:
    """The password and the secret-looking query values of an export target (what `redact_target` masks)."""
    parts = urlsplit(url)
    found = [v for k, _, v in (item.partition("=") for item in parts.query.split("&"))
             if v and any(s in k.lower() for s in SECRET_QUERY_KEYS)]
    return [s for s in (parts.password, *found) if s]


def secrets_of(url: str) -> list[str]:
    """Every part of `url` that could be a credential, longest first (for scrubbing messages):
    userinfo, query values and the whole query, token-like path segments. Host and port are not."""
    parts = urlsplit(url)
    found = [parts.username or "", parts.password or "", parts.query]
    if "@" in parts.netloc:
        found.append(parts.netloc.rsplit("@", 1)[0])
    found += [kv.split("=", 1)[-1] for kv in parts.query.split("&") if kv]
    found += [seg for seg in parts.path.split("/") if _SECRETISH.match(seg)]
    return sorted({s for s in found if len(s) >= 4}, key=len, reverse=True)


def scrub(text: str, secrets: Iterable[str]) -> str:
    """`text` with every one of `secrets` replaced by ***; pass them longest first, so a secret that
    contains another is masked whole."""
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


class ScrubSecrets(logging.Filter):
    """Removes registered URL secrets from records of the HTTP library's own loggers: urllib3 logs
    every request line ("POST /v2/<key>?api-key=... HTTP/1.1") at DEBUG."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: list[str] = []
        self._lock = threading.Lock()

    def add(self, secrets: Iterable[str]) -> None:
        with self._lock:
            self.secrets = sorted(set(self.secrets) | set(secrets), key=len, reverse=True)

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = self.secrets
        if secrets:
            text = record.getMessage()
            if any(s in text for s in secrets):
                record.msg, record.args = scrub(text, secrets), ()
        return True


SCRUB = ScrubSecrets()
for _name in ("urllib3.connectionpool", "urllib3.connection", "requests"):
    logging.getLogger(_name).addFilter(SCRUB)
