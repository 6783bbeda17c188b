"""Credentials in RPC URLs (API keys in paths or query strings) never reach logs: URL redaction and a
logging filter that scrubs every known secret from records."""
from __future__ import annotations

import logging
import re
import threading
from typing import Iterable
from urllib.parse import urlsplit, urlunsplit

_SECRETISH = re.compile(r"^[A-Za-z0-9_\-]{16,}$")


def redact_url(url: str) -> str:
    """The URL safe to print: no userinfo, every query value hidden, long token-like path parts hidden.

    Providers put API keys in the query (`?api-key=`), in the path (`/v2/<key>`, `/<token>/`) or in
    userinfo; all three are removed. Host and port stay, so the message still says where."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
    except ValueError:
        return "<unparseable URL>"
    path = "/".join("***" if _SECRETISH.match(seg) else seg for seg in parts.path.split("/"))
    query = "&".join(
        (kv.split("=", 1)[0] + "=***") if "=" in kv else "***" for kv in parts.query.split("&") if kv
    )
    return urlunsplit((parts.scheme, host, path, query, ""))


def _secrets_of(url: str) -> list[str]:
    """Every part of `url` that could be a credential, longest first (for scrubbing messages):
    userinfo, query values and the whole query, token-like path segments. Host and port are not."""
    parts = urlsplit(url)
    found = [parts.username or "", parts.password or "", parts.query]
    if "@" in parts.netloc:
        found.append(parts.netloc.rsplit("@", 1)[0])
    found += [kv.split("=", 1)[-1] for kv in parts.query.split("&") if kv]
    found += [seg for seg in parts.path.split("/") if _SECRETISH.match(seg)]
    return sorted({s for s in found if len(s) >= 4}, key=len, reverse=True)


class _ScrubSecrets(logging.Filter):
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
                for s in secrets:
                    text = text.replace(s, "***")
                record.msg, record.args = text, ()
        return True


_SCRUB = _ScrubSecrets()
