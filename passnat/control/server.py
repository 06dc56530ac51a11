"""The daemon's side of the control socket: non-blocking, served from the daemon's loop.

``ControlServer`` listens on a Unix stream socket, accepts connections, reads
one request line, calls ``dispatch(request) -> answer`` and writes the answer
as the socket lets it; it never blocks the router.  Root only: the socket file
is created mode 0600 (its directory 0700 when the server creates it) and
every connection's peer must have uid 0 (``SO_PEERCRED``).

Slots (issue 13): at most ``MAX_CLIENTS`` connections at once, and one slot
is always kept free for the operator: when a new connection would take the
last one, the connection that has waited longest without sending its request
is closed (it gets a ``busy`` error line first).  Only when every other
connection is being answered is the new one refused, with a ``busy`` error
line (``passnat show ...`` then exits with status 5).  A connection must send
its request within ``REQUEST_TIMEOUT`` seconds of connecting, and a client
that takes no byte of its answer for ``IDLE_TIMEOUT`` seconds is dropped
(``expire``, from the daemon's housekeeping once a second).

Invariants: ``dispatch`` exceptions become error answers, never escape; a
malformed, oversized or deeply nested request is a bad request answered with
an error (protocol.py), never a traceback.
"""
from __future__ import annotations

import errno
import functools
import logging
import os
import socket
import stat
import struct
import time
from collections.abc import Callable
from typing import Any

from passnat.control.protocol import MAX_REQUEST, ProtocolError, decode_request, encode
from passnat.io.reactor import POLLERR, POLLIN, POLLOUT, Reactor

log = logging.getLogger("passnat.control")

MAX_CLIENTS = 64
REQUEST_TIMEOUT = 5.0  # seconds from connect to the end of the request line
IDLE_TIMEOUT = 10.0  # seconds without the client taking a byte of its answer
LISTEN_BACKLOG = 256  # connections the kernel queues until the loop accepts them

Dispatch = Callable[[dict[str, Any]], Any]


class ControlError(Exception):
    """The control socket cannot be created (another daemon, bad path)."""


class _Client:
    __slots__ = ("progress", "rbuf", "since", "sock", "wbuf")

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.rbuf = b""
        self.wbuf = b""
        self.since = time.monotonic()  # connected
        self.progress = self.since  # the client last took bytes of its answer


def _busy(message: str) -> bytes:
    return encode({"ok": False, "busy": True, "error": message})


def daemon_answers(path: str) -> bool:
    """Whether a daemon answers on ``path`` (used to refuse a second daemon)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(2.0)
            s.connect(path)
            s.sendall(encode({"op": "ping"}))
            return s.recv(1) != b""
    except OSError:
        return False


class ControlServer:
    def __init__(self, path: str, reactor: Reactor, dispatch: Dispatch):
        self.path = path
        self.reactor = reactor
        self.dispatch = dispatch
        self.clients: dict[int, _Client] = {}
        self.refused = 0  # connections refused: every slot busy answering
        self.evicted = 0  # waiting connections closed to keep a slot free, or timed out
        self.sock = self._listen(path)
        reactor.watch(self.sock.fileno(), POLLIN, self._on_accept)

    @staticmethod
    def _listen(path: str) -> socket.socket:
        parent = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(parent):
            try:
                os.makedirs(parent, mode=0o700)
            except OSError as e:
                raise ControlError(f"cannot create {parent}: {e.strerror}") from None
        if os.path.lexists(path):
            if not stat.S_ISSOCK(os.lstat(path).st_mode):
                raise ControlError(f"{path} exists and is not a socket")
            if daemon_answers(path):
                raise ControlError(f"another passnat daemon answers on {path}")
            os.unlink(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            sock.bind(path)
        except OSError as e:
            sock.close()
            raise ControlError(f"cannot bind {path}: {e.strerror}") from None
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
        sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
        return sock

    # ------------------------------------------------------------ events

    def _on_accept(self, _revents: int) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log.warning("control socket: cannot accept: %s", e.strerror)
                return
            if not _peer_is_root(conn):
                conn.close()
                continue
            conn.setblocking(False)
            if len(self.clients) + 1 >= MAX_CLIENTS:
                self._make_room()
            if len(self.clients) >= MAX_CLIENTS:
                self.refused += 1
                _notify(conn, _busy(f"the daemon is busy: all {MAX_CLIENTS} control connections are being "
                                    "answered; try again"))
                _drain(conn)
                conn.close()
                continue
            client = _Client(conn)
            self.clients[conn.fileno()] = client
            self.reactor.watch(conn.fileno(), POLLIN, functools.partial(self._on_client, client))

    def _on_client(self, c: _Client, revents: int) -> None:
        if revents & POLLIN and not c.wbuf:
            try:
                data = c.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                data = None
            except OSError:
                return self._close(c)
            if data == b"":
                return self._close(c)
            if data:
                c.rbuf += data
                if b"\n" in c.rbuf:
                    line = c.rbuf.split(b"\n", 1)[0]
                    c.rbuf = b""
                    c.wbuf = self._answer(line)
                    c.progress = time.monotonic()
                    self.reactor.modify(c.sock.fileno(), POLLOUT)
                elif len(c.rbuf) > MAX_REQUEST:
                    c.rbuf = b""
                    c.wbuf = encode({"ok": False, "error": f"request too long (more than {MAX_REQUEST} bytes)"})
                    c.progress = time.monotonic()
                    self.reactor.modify(c.sock.fileno(), POLLOUT)
        if revents & POLLOUT and c.wbuf:
            try:
                sent = c.sock.send(c.wbuf)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                return self._close(c)
            if sent:
                c.wbuf = c.wbuf[sent:]
                c.progress = time.monotonic()
            if not c.wbuf:
                return self._close(c)
        if revents & POLLERR and not revents & (POLLIN | POLLOUT):
            self._close(c)

    def _answer(self, line: bytes) -> bytes:
        try:
            req = decode_request(line)
            return encode({"ok": True, "data": self.dispatch(req)})
        except ProtocolError as e:
            return encode({"ok": False, "error": str(e)})
        except Exception as e:  # a command must never take the router down
            log.exception("control command failed")
            return encode({"ok": False, "error": f"internal error: {e}"})

    def _close(self, c: _Client) -> None:
        _drain(c.sock)
        fd = c.sock.fileno()
        self.clients.pop(fd, None)
        self.reactor.unwatch(fd)
        c.sock.close()

    def _make_room(self) -> None:
        """Close the connection that has waited longest without sending its request."""
        waiting = [c for c in self.clients.values() if not c.wbuf]
        if not waiting:
            return
        c = min(waiting, key=lambda c: c.since)
        self.evicted += 1
        _notify(c.sock, _busy("closed: no request received, and the daemon needed the connection slot"))
        self._close(c)

    def expire(self, now: float) -> None:
        """Close connections that sent no request within REQUEST_TIMEOUT, or took no byte of
        their answer for IDLE_TIMEOUT (``now``: time.monotonic())."""
        for c in list(self.clients.values()):
            if c.wbuf:
                if now - c.progress > IDLE_TIMEOUT:
                    self._close(c)
            elif now - c.since > REQUEST_TIMEOUT:
                self.evicted += 1
                _notify(c.sock, _busy(f"closed: no request within {REQUEST_TIMEOUT:g} s"))
                self._close(c)

    def close(self) -> None:
        """Close every connection and the listening socket; the socket file is removed
        whatever else fails."""
        try:
            for c in list(self.clients.values()):
                try:
                    self._close(c)
                except OSError:
                    pass
            self.reactor.unwatch(self.sock.fileno())
            self.sock.close()
        finally:
            try:
                os.unlink(self.path)
            except OSError:
                pass


def _drain(conn: socket.socket) -> None:
    """Read what the client sent and nobody will read (a Unix socket closed with unread data
    resets the peer, which would then lose the answer it has not read yet)."""
    try:
        for _ in range(4):
            if not conn.recv(65536):
                return
    except OSError:
        pass


def _notify(conn: socket.socket, line: bytes) -> None:
    """Best-effort last words on a connection about to be closed (never blocks)."""
    try:
        conn.send(line)
    except OSError:
        pass


def _peer_is_root(conn: socket.socket) -> bool:
    try:
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return False
    uid: int = struct.unpack("3i", creds)[1]
    return uid == 0
