"""The suite's loopback guard (tests/support/loopback_guard.py, installed by tests/conftest.py): names
and TCP connections that would leave the machine are refused in-process; loopback works as before."""
from __future__ import annotations

import socket

import pytest
import requests

from tests.support import loopback_guard
from tests.support.net import free_port
from tests.support.raw_http import RawServer


def test_the_guard_is_installed_for_the_suite():
    assert socket.getaddrinfo is loopback_guard._getaddrinfo
    assert socket.socket.connect is loopback_guard._connect


@pytest.mark.parametrize("host", ["iq-etl-test.invalid", "api.mainnet-beta.solana.com", "example.com"])
def test_other_names_fail_as_unknown_names_without_a_lookup(host):
    with pytest.raises(socket.gaierror) as info:
        socket.getaddrinfo(host, 80)
    assert info.value.errno == socket.EAI_NONAME
    with pytest.raises(socket.gaierror):
        socket.gethostbyname(host)


@pytest.mark.parametrize("address", [("10.255.255.53", 53), ("192.168.0.7", 80), ("8.8.8.8", 443),
                                     ("2001:db8::1", 80)])
def test_tcp_connections_off_loopback_are_refused(address):
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        with pytest.raises(ConnectionRefusedError, match="loopback only"):
            sock.connect(address)
        with pytest.raises(ConnectionRefusedError, match="loopback only"):
            sock.connect_ex(address)


def test_requests_to_other_hosts_fail_as_unresolved():
    with pytest.raises(requests.ConnectionError) as info:
        requests.get("http://iq-etl-test.invalid:8899/", timeout=2)
    assert "Name or service not known" in str(info.value)


def test_loopback_still_works():
    assert loopback_guard.stays_local("localhost") and loopback_guard.stays_local("127.0.0.1")
    assert loopback_guard.stays_local("::1") and loopback_guard.stays_local(None)
    assert socket.getaddrinfo("localhost", 80)
    srv = RawServer(lambda conn, stopping: conn.sendall(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n"))
    try:
        assert requests.get(srv.url, timeout=5).status_code == 204
    finally:
        srv.close()
    with socket.socket() as sock:  # a refused loopback port is refused by the kernel, not the guard
        with pytest.raises(ConnectionRefusedError) as info:
            sock.connect(("127.0.0.1", free_port()))
        assert "loopback only" not in str(info.value)
