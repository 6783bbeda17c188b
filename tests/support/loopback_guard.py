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
from typing import Any, Callable

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
    return host == "" or _is_local_address(host) or host in LOCAL_NAMES or host.endswith(".localhost")


def _local_names_only(lookup: Callable[..., Any]) -> Callable[..., Any]:
    """`lookup` (getaddrinfo, gethostbyname...) for local names; any other name fails as unknown."""

    def guarded(host: Any, *args: Any, **kwargs: Any) -> Any:
        if not stays_local(host):
            raise socket.gaierror(socket.EAI_NONAME, f"Name or service not known ({host!r}: tests resolve "
                                                     "local names only, tests/support/loopback_guard.py)")
        return lookup(host, *args, **kwargs)

    guarded.__wrapped__ = lookup  # type: ignore[attr-defined]
    return guarded


_getaddrinfo = _local_names_only(socket.getaddrinfo)


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
    if socket.getaddrinfo is _getaddrinfo:
        return
    socket.getaddrinfo = _getaddrinfo
    socket.gethostbyname = _local_names_only(socket.gethostbyname)
    socket.gethostbyname_ex = _local_names_only(socket.gethostbyname_ex)
    socket.socket.connect = _connect  # type: ignore[method-assign]
    socket.socket.connect_ex = _connect_ex  # type: ignore[method-assign]
