"""Keeps the test process on loopback: no name lookup leaves the machine and no TCP connection goes
to another address (private ranges included).

Installed for the whole suite by tests/conftest.py. A name the machine answers itself (/etc/hosts:
localhost, the host's own name) resolves as usual; any other name fails at once as an unknown name
does (socket.gaierror EAI_NONAME, the error the real resolver gives for `*.invalid`), without a query
to the nameserver. The tests of "name not resolved (DNS)" messages rely on that: before this guard they
sent a real DNS query for `*.invalid` to the machine's nameserver (10.255.255.53 here). A TCP connect
to an address that is not loopback raises ConnectionRefusedError naming the guard.

UDP connect() is left alone: it sends nothing (Dask's get_ip() uses one to learn the local address).
Child processes (CLI runs, dbt, servers) are outside this guard: their targets are the loopback
servers the tests start."""
from __future__ import annotations

import ipaddress
import socket
from pathlib import Path
from typing import Any

_REAL_GETADDRINFO = socket.getaddrinfo
_REAL_GETHOSTBYNAME = socket.gethostbyname
_REAL_GETHOSTBYNAME_EX = socket.gethostbyname_ex
_REAL_CONNECT = socket.socket.connect
_REAL_CONNECT_EX = socket.socket.connect_ex


def _names_in_hosts_file(path: Path = Path("/etc/hosts")) -> frozenset[str]:
    """Names /etc/hosts maps to loopback addresses: the resolver answers them from the file."""
    names = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"}
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return frozenset(names)
    for line in lines:
        fields = line.split("#", 1)[0].split()
        if len(fields) >= 2 and _is_local_address(fields[0]):
            names.update(name.lower() for name in fields[1:])
    return frozenset(names)


def _is_local_address(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified


LOCAL_NAMES = _names_in_hosts_file()


def stays_local(host: Any) -> bool:
    """True when resolving or reaching `host` needs nothing outside this machine."""
    if host is None:
        return True  # getaddrinfo(None, port): the passive (bind) address
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    host = str(host).strip().rstrip(".").lower()
    if host in ("", "<broadcast>"):
        return host == ""
    return _is_local_address(host) or host in LOCAL_NAMES or host.endswith(".localhost")


def _refuse_name(host: Any) -> socket.gaierror:
    return socket.gaierror(socket.EAI_NONAME, f"Name or service not known ({host!r}: tests resolve local "
                                              "names only, tests/support/loopback_guard.py)")


def _getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
    if not stays_local(host):
        raise _refuse_name(host)
    return _REAL_GETADDRINFO(host, *args, **kwargs)


def _gethostbyname(host: str) -> str:
    if not stays_local(host):
        raise _refuse_name(host)
    return _REAL_GETHOSTBYNAME(host)


def _gethostbyname_ex(host: str) -> Any:
    if not stays_local(host):
        raise _refuse_name(host)
    return _REAL_GETHOSTBYNAME_EX(host)


def _check_connect(sock: socket.socket, address: Any) -> None:
    if sock.family not in (socket.AF_INET, socket.AF_INET6) or sock.type != socket.SOCK_STREAM:
        return
    host = address[0] if isinstance(address, tuple) and address else address
    if not stays_local(host):
        raise ConnectionRefusedError(f"tests reach loopback only: refused to connect to {address!r} "
                                     "(tests/support/loopback_guard.py)")


def _connect(self: socket.socket, address: Any) -> None:
    _check_connect(self, address)
    return _REAL_CONNECT(self, address)


def _connect_ex(self: socket.socket, address: Any) -> int:
    _check_connect(self, address)
    return _REAL_CONNECT_EX(self, address)


def install() -> None:
    """Put the guard in place for this process (idempotent)."""
    socket.getaddrinfo = _getaddrinfo
    socket.gethostbyname = _gethostbyname
    socket.gethostbyname_ex = _gethostbyname_ex
    socket.socket.connect = _connect  # type: ignore[method-assign]
    socket.socket.connect_ex = _connect_ex  # type: ignore[method-assign]
