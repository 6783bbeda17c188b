"""One wording for a failed network exchange, whichever client saw it.

`classify(exc)` walks what an exception wraps (requests wraps urllib3, which wraps the socket
error) and returns (kind, text). The text never quotes the exception, which may hold the URL. Kinds:
refused, dns, timeout (text says connecting or waiting for the reply), connect (no connection for another
reason), tls, dropped (reset, closed mid-response, or anything else)."""
from __future__ import annotations

import http.client
import socket
import ssl

import requests
import urllib3

_MAX_CAUSES = 32  # a cycle of causes, or a pathological chain, is not walked forever


def causes(exc: BaseException) -> list[BaseException]:
    """`exc` and everything it wraps (cause, context, urllib3's `reason`, exceptions among the args)."""
    out: list[BaseException] = []
    stack = [exc]
    while stack and len(out) < _MAX_CAUSES:
        e = stack.pop()
        if any(e is seen for seen in out):
            continue
        out.append(e)
        for nxt in (e.__cause__, e.__context__, getattr(e, "reason", None), *getattr(e, "args", ())):
            if isinstance(nxt, BaseException):
                stack.append(nxt)
    return out


def classify(exc: BaseException) -> tuple[str, str]:
    """(kind, text) of a network failure: "connection refused", "name not resolved (DNS)", "timed out
    connecting", "could not connect (...)", "timed out waiting for the reply", "TLS error", "connection reset
    by the server", "connection closed mid-response", "network error (...)" or "connection dropped"."""
    chain = causes(exc)

    def has(*types: type) -> bool:
        return any(isinstance(e, types) for e in chain)

    if has(ConnectionRefusedError):
        return "refused", "connection refused"
    if has(socket.gaierror, urllib3.exceptions.NameResolutionError):
        return "dns", "name not resolved (DNS)"
    # urllib3's NewConnectionError (any failure to connect) subclasses ConnectTimeoutError: tell them apart
    if has(requests.ConnectTimeout) or any(isinstance(e, urllib3.exceptions.ConnectTimeoutError)
                                           and not isinstance(e, urllib3.exceptions.NewConnectionError)
                                           for e in chain):
        return "timeout", "timed out connecting"
    if has(urllib3.exceptions.NewConnectionError):
        why = next((e.strerror for e in chain if isinstance(e, OSError) and e.strerror), None)
        return "connect", f"could not connect ({why})" if why else "could not connect"
    if has(urllib3.exceptions.TimeoutError, requests.Timeout, TimeoutError):
        return "timeout", "timed out waiting for the reply"
    if has(ssl.SSLError, urllib3.exceptions.SSLError, requests.exceptions.SSLError):
        return "tls", "TLS error"
    if has(ConnectionResetError):
        return "dropped", "connection reset by the server"
    if has(urllib3.exceptions.IncompleteRead, http.client.IncompleteRead, urllib3.exceptions.ProtocolError,
           ConnectionAbortedError, BrokenPipeError):
        return "dropped", "connection closed mid-response"
    why = next((e.strerror for e in chain if isinstance(e, OSError) and e.strerror), None)
    return "dropped", f"network error ({why.lower()})" if why else "connection dropped"
