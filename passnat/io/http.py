"""A small read-only HTTP/1.1 server inside the daemon's reactor (``passnat run --http``).

It serves a fixed set of paths (``/metrics``, ``/``, ...) to monitoring
systems and browsers without ever blocking the router: the listening socket
and every connection are non-blocking and watched by the daemon's
``Reactor``; a request is answered by one call to its handler in the loop
(which builds the page from the router's state), and the answer is written
as the socket accepts it.

What it answers:
  * ``GET`` and ``HEAD`` on the registered paths (a query string is ignored);
  * ``404`` for any other path, ``405`` (with ``Allow: GET, HEAD``) for any other
    method, ``400`` for a malformed request, ``431`` for a request head over
    ``MAX_HEAD`` bytes; a request body is never read;
  * one request per connection (``Connection: close``): Prometheus and browsers
    reconnect, and no connection holds state between requests.

Bounds: at most ``MAX_CLIENTS`` connections (more are closed at accept), a
request head of ``MAX_HEAD`` bytes, ``CLIENT_TIMEOUT`` seconds per connection
(``expire`` from the daemon's housekeeping), and handler exceptions become a
``500`` answer, never an exception in the loop.
"""
from __future__ import annotations

import errno
import functools
import ipaddress
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

from passnat.io.reactor import POLLERR, POLLIN, POLLOUT, Reactor

log = logging.getLogger("passnat.http")

MAX_CLIENTS = 32
MAX_HEAD = 8192
CLIENT_TIMEOUT = 10.0

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            431: "Request Header Fields Too Large", 500: "Internal Server Error", 503: "Service Unavailable"}
_SECURITY = ("X-Content-Type-Options: nosniff\r\n"
             "Content-Security-Policy: default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
             "frame-ancestors 'none'\r\n"
             "Cache-Control: no-store\r\n")


class HttpError(Exception):
    """The endpoint cannot be opened (bad address, address in use)."""


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    content_type: str
    body: bytes


Handler = Callable[[], Response]


def parse_bind(text: str) -> tuple[str, int]:
    """``127.0.0.1:9469`` / ``[::1]:9469`` -> (address, port); ValueError with the reason."""
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"--http {text!r}: expected ADDRESS:PORT (e.g. 127.0.0.1:9469)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"--http {text!r}: {host!r} is not an IP address (give the address to listen on, "
                         "e.g. 127.0.0.1)") from None
    if not port.isdigit() or not 0 <= int(port) < 65536:  # 0: any free port (the log says which)
        raise ValueError(f"--http {text!r}: {port!r} is not a port number")
    return str(addr), int(port)


class _Conn:
    __slots__ = ("peer", "rbuf", "since", "sock", "wbuf")

    def __init__(self, sock: socket.socket, peer: str):
        self.sock = sock
        self.peer = peer
        self.rbuf = b""
        self.wbuf = b""
        self.since = time.monotonic()


class HttpServer:
    def __init__(self, bind: str, reactor: Reactor, routes: dict[str, Handler]):
        self.address, self.port = parse_bind(bind)
        self.reactor = reactor
        self.routes = routes
        self.conns: dict[int, _Conn] = {}
        self.requests = 0
        family = socket.AF_INET6 if ":" in self.address else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((self.address, self.port))
            sock.listen(MAX_CLIENTS)
            sock.setblocking(False)
        except OSError as e:
            sock.close()
            raise HttpError(f"--http {bind}: cannot listen: {e.strerror or e}") from None
        self.sock = sock
        self.port = sock.getsockname()[1]
        reactor.watch(sock.fileno(), POLLIN, self._on_accept)

    @property
    def url(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"http://{host}:{self.port}/"

    # ------------------------------------------------------------ events

    def _on_accept(self, _revents: int) -> None:
        while True:
            try:
                conn, peer = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log.warning("http: cannot accept: %s", e.strerror)
                return
            if len(self.conns) >= MAX_CLIENTS:
                conn.close()
                continue
            conn.setblocking(False)
            c = _Conn(conn, str(peer[0]))
            self.conns[conn.fileno()] = c
            self.reactor.watch(conn.fileno(), POLLIN, functools.partial(self._on_conn, c))

    def _on_conn(self, c: _Conn, revents: int) -> None:
        if revents & POLLIN and not c.wbuf:
            try:
                data = c.sock.recv(4096)
            except (BlockingIOError, InterruptedError):
                data = None
            except OSError:
                return self._close(c)
            if data == b"":
                return self._close(c)
            if data:
                c.rbuf += data
                end = c.rbuf.find(b"\r\n\r\n")
                if end < 0:
                    end = c.rbuf.find(b"\n\n")
                if end >= 0:
                    self._respond(c, self.answer(c.rbuf[:end]))
                elif len(c.rbuf) > MAX_HEAD:
                    self._respond(c, (_plain(431, "request head too large\n"), False, ""))
        if revents & POLLOUT and c.wbuf:
            try:
                sent = c.sock.send(c.wbuf)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                return self._close(c)
            c.wbuf = c.wbuf[sent:]
            if not c.wbuf:
                return self._close(c)
        if revents & POLLERR and not revents & (POLLIN | POLLOUT):
            self._close(c)

    def _respond(self, c: _Conn, answer: tuple[Response, bool, str]) -> None:
        resp, head, extra = answer
        body = b"" if head else resp.body
        head_text = (f"HTTP/1.1 {resp.status} {_REASONS.get(resp.status, 'Error')}\r\n"
                     f"Content-Type: {resp.content_type}\r\n"
                     f"Content-Length: {len(resp.body)}\r\n"
                     f"{extra}{_SECURITY}Connection: close\r\n\r\n")
        c.wbuf = head_text.encode("latin-1") + body
        c.rbuf = b""
        self.requests += 1
        self.reactor.modify(c.sock.fileno(), POLLOUT)

    def answer(self, head: bytes) -> tuple[Response, bool, str]:
        """(response, HEAD request?, extra header lines) for a request head."""
        try:
            line = head.split(b"\n", 1)[0].rstrip(b"\r").decode("ascii")
        except UnicodeDecodeError:
            return _plain(400, "bad request line\n"), False, ""
        parts = line.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            return _plain(400, "bad request line\n"), False, ""
        method, target, _version = parts
        if method not in ("GET", "HEAD"):
            return _plain(405, "only GET and HEAD\n"), False, "Allow: GET, HEAD\r\n"
        path = target.split("?", 1)[0]
        handler = self.routes.get(path)
        if handler is None:
            return _plain(404, f"no such page; try {' '.join(sorted(self.routes))}\n"), method == "HEAD", ""
        try:
            return handler(), method == "HEAD", ""
        except Exception:  # a page must never take the router down
            log.exception("http: %s failed", path)
            return _plain(500, "internal error (logged)\n"), method == "HEAD", ""

    def _close(self, c: _Conn) -> None:
        fd = c.sock.fileno()
        self.conns.pop(fd, None)
        self.reactor.unwatch(fd)
        c.sock.close()

    def expire(self, now: float) -> None:
        """Close connections older than CLIENT_TIMEOUT (``now``: time.monotonic())."""
        for c in [c for c in self.conns.values() if now - c.since > CLIENT_TIMEOUT]:
            self._close(c)

    def close(self) -> None:
        for c in list(self.conns.values()):
            self._close(c)
        self.reactor.unwatch(self.sock.fileno())
        self.sock.close()


def _plain(status: int, text: str) -> Response:
    return Response(status, "text/plain; charset=utf-8", text.encode())
