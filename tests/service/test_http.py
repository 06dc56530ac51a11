"""The HTTP endpoint in a reactor, as the daemon runs it: GET/HEAD on its paths and nothing else."""
from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from passnat.io import http
from passnat.io.http import HttpError, HttpServer, Response, parse_bind
from passnat.io.reactor import Reactor


@pytest.fixture
def server() -> Iterator[HttpServer]:
    calls = {"n": 0}

    def page() -> Response:
        calls["n"] += 1
        return Response(200, "text/html; charset=utf-8", b"<p>hello</p>")

    def boom() -> Response:
        raise RuntimeError("bug")

    s = HttpServer("127.0.0.1:0", Reactor(), {"/": page, "/metrics": lambda: Response(200, "text/plain", b"m 1\n"),
                                                "/boom": boom})
    yield s
    s.close()


def pump(s: HttpServer, cond: object = None, timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        s.reactor.dispatch(s.reactor.poll(0.02))
        if callable(cond) and cond():
            return


def fetch(s: HttpServer, request: bytes) -> bytes:
    c = socket.create_connection(("127.0.0.1", s.port), timeout=2)
    c.sendall(request)
    c.setblocking(False)
    data = b""
    deadline = time.monotonic() + 3
    try:
        while time.monotonic() < deadline:
            s.reactor.dispatch(s.reactor.poll(0.02))
            try:
                chunk = c.recv(65536)
            except BlockingIOError:
                continue
            if not chunk:
                return data
            data += chunk
    finally:
        c.close()
    raise AssertionError(f"no complete answer: {data!r}")


def test_parse_bind() -> None:
    assert parse_bind("127.0.0.1:9469") == ("127.0.0.1", 9469)
    assert parse_bind("[::1]:9469") == ("::1", 9469)
    for bad in ("9469", "localhost:9469", "127.0.0.1:0x10", "127.0.0.1:70000", ":80"):
        with pytest.raises(ValueError):
            parse_bind(bad)


def test_get_and_head(server: HttpServer) -> None:
    got = fetch(server, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    head, body = got.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and body == b"<p>hello</p>"
    assert b"Content-Length: 12\r\n" in head and b"Connection: close" in head and b"nosniff" in head
    got = fetch(server, b"HEAD /metrics?x=1 HTTP/1.0\r\n\r\n")
    assert got.startswith(b"HTTP/1.1 200 OK") and got.endswith(b"\r\n\r\n") and b"Content-Length: 4\r\n" in got


def test_only_get_and_head_on_known_paths(server: HttpServer) -> None:
    assert fetch(server, b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc").startswith(b"HTTP/1.1 405 ")
    assert b"Allow: GET, HEAD" in fetch(server, b"DELETE /metrics HTTP/1.1\r\n\r\n")
    assert fetch(server, b"GET /etc/passwd HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 404 ")
    assert fetch(server, b"GET /../metrics HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 404 ")
    assert fetch(server, b"garbage\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    assert fetch(server, b"GET / SPDY/3\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    assert fetch(server, b"\xff\xfe / HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    assert fetch(server, b"GET / HTTP/1.1\r\nX: " + b"a" * 9000).startswith(b"HTTP/1.1 431 ")
    assert fetch(server, b"GET /boom HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 500 ")  # logged, loop unharmed
    assert fetch(server, b"GET / HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 200 ")


def test_a_request_split_over_segments(server: HttpServer) -> None:
    c = socket.create_connection(("127.0.0.1", server.port), timeout=2)
    try:
        for part in (b"GE", b"T /metr", b"ics HTTP/1.1\r\nHo", b"st: a\r\n", b"\r\n"):
            c.sendall(part)
            pump(server, timeout=0.05)
        pump(server, timeout=0.2)
        assert c.recv(4096).startswith(b"HTTP/1.1 200 OK")
    finally:
        c.close()


def test_bounded_connections_and_timeouts(server: HttpServer, monkeypatch: pytest.MonkeyPatch) -> None:
    idle = []
    try:
        for _ in range(http.MAX_CLIENTS + 5):
            idle.append(socket.create_connection(("127.0.0.1", server.port), timeout=2))
            pump(server, timeout=0.02)
        pump(server, timeout=0.2)
        assert len(server.conns) == http.MAX_CLIENTS  # the rest were closed at accept
        server.expire(time.monotonic() + http.CLIENT_TIMEOUT + 1)
        assert not server.conns
        assert fetch(server, b"GET / HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 200 ")
    finally:
        for c in idle:
            c.close()


def test_address_in_use_is_a_clear_error(server: HttpServer) -> None:
    with pytest.raises(HttpError, match=r"--http 127\.0\.0\.1:\d+: cannot listen: Address already in use"):
        HttpServer(f"127.0.0.1:{server.port}", Reactor(), {})
