"""The control socket: server in a reactor, client requests, errors and exit codes."""
from __future__ import annotations

import json
import logging
import os
import socket
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from passnat.control.cli import main
from passnat.control.client import EXIT_BUSY, EXIT_ERROR, EXIT_NO_DAEMON, ClientError, request
from passnat.control.commands import add_parsers
from passnat.control.protocol import MAX_NESTING, MAX_REQUEST, ProtocolError, decode_request
from passnat.control.server import IDLE_TIMEOUT, MAX_CLIENTS, REQUEST_TIMEOUT, ControlError, ControlServer
from passnat.io.reactor import Reactor


class Served:
    """A ControlServer pumped by a background thread until ``stop``."""

    def __init__(self, path: str, dispatch: Any):
        self.reactor = Reactor()
        self.server = ControlServer(path, self.reactor, dispatch)
        self.running = True
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while self.running:
            self.reactor.dispatch(self.reactor.poll(0.05))

    def stop(self) -> None:
        self.running = False
        self.thread.join(5)
        self.server.close()


def dispatch(req: dict[str, Any]) -> Any:
    if req["op"] == "clear_nat":
        if req.get("id") == 42:
            raise ProtocolError("no NAT session with id 42")
        return {"cleared": 3}
    if req["op"] == "status_nat":
        return [{"id": 1, "type": "napt", "interface": "lan1", "protocol": "udp", "inside": "192.168.0.11",
                 "inside_port": 5000, "outside": "203.0.113.1", "outside_port": 5000, "remote": "203.0.113.10",
                 "remote_port": 53, "remaining": 14.0}]
    if req["op"] == "counters":
        raise RuntimeError("boom")
    return {"op": req["op"]}


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    s = Served(str(tmp_path / "run" / "ctl.sock"), dispatch)
    yield s
    s.stop()


def test_socket_is_root_only(served: Served) -> None:
    path = served.server.path
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700


def test_requests_and_errors(served: Served) -> None:
    path = served.server.path
    assert request(path, "ping") == {"op": "ping"}
    assert request(path, "clear_nat", id=None) == {"cleared": 3}
    with pytest.raises(ClientError) as e:
        request(path, "clear_nat", id=42)
    assert e.value.status == EXIT_ERROR and "no NAT session with id 42" in e.value.message
    with pytest.raises(ClientError) as e:
        request(path, "counters")
    assert "internal error: boom" in e.value.message  # the server survives a failing command
    assert request(path, "ping") == {"op": "ping"}
    with pytest.raises(ClientError, match="unknown operation"):
        request(path, "reboot")


def test_garbage_and_oversized_requests(served: Served) -> None:
    for payload in (b"not json\n", b"\xff\xfe\n", b"x" * 70000):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(served.server.path)
            s.sendall(payload)
            answer = b""
            while chunk := s.recv(4096):
                answer += chunk
        assert b'"ok":false' in answer


def test_second_server_refused_and_stale_socket_replaced(tmp_path: Path, served: Served) -> None:
    with pytest.raises(ControlError, match="another passnat daemon"):
        ControlServer(served.server.path, Reactor(), dispatch)
    stale = tmp_path / "stale.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(stale))
    s.close()  # a socket file nobody listens on
    with pytest.raises(ClientError) as e:
        request(str(stale), "ping")
    assert e.value.status == EXIT_NO_DAEMON and "stale" in e.value.message
    again = Served(str(stale), dispatch)
    try:
        assert request(str(stale), "ping") == {"op": "ping"}
    finally:
        again.stop()
    assert not stale.exists()
    notsock = tmp_path / "file"
    notsock.write_text("x")
    with pytest.raises(ControlError, match="not a socket"):
        ControlServer(str(notsock), Reactor(), dispatch)


def test_cli_show_and_clear(served: Served, capsys: pytest.CaptureFixture[str]) -> None:
    path = served.server.path
    assert main(["show", "status", "nat", "--control", path]) == 0
    out = capsys.readouterr().out
    assert "   1:napt  lan1     udp    192.168.0.11:5000  =     203.0.113.1:5000  <->   203.0.113.10:53 [00:00:14]" in out
    assert main(["show", "status", "nat", "--json", "--control", path]) == 0
    assert '"inside_port": 5000' in capsys.readouterr().out
    assert main(["clear", "nat", "session", "all", "--control", path]) == 0
    assert capsys.readouterr().out == "3 session(s) cleared\n"
    assert main(["clear", "nat", "session", "42", "--control", path]) == 1
    assert "no NAT session with id 42" in capsys.readouterr().err
    assert main(["clear", "nat", "session", "some", "--control", path]) == 2


def test_cli_without_daemon(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for what in (["status", "nat"], ["status", "filter"], ["counters"], ["config"], ["arp"]):
        assert main(["show", *what, "--control", str(tmp_path / "none.sock")]) == EXIT_NO_DAEMON
        err = capsys.readouterr().err
        assert "no passnat daemon" in err and "none.sock" in err


def test_protocol_validation() -> None:
    assert decode_request(b'{"op":"clear_nat","id":3}') == {"op": "clear_nat", "id": 3}
    for bad in (b'{"op":"clear_nat","id":-1}', b'{"op":"clear_nat","id":true}', b'{"op":"clear_nat","id":"1"}',
                b'[1]', b'{"op":"x"}'):
        with pytest.raises(ProtocolError):
            decode_request(bad)
    assert callable(add_parsers)


# ---------------------------------------------------------------- slots and limits (issue 13)


def _pump(reactor: Reactor, turns: int = 5) -> None:
    for _ in range(turns):
        reactor.dispatch(reactor.poll(0.02))


def _read_all(s: socket.socket) -> bytes:
    s.settimeout(5)
    got = b""
    try:
        while chunk := s.recv(65536):
            got += chunk
    except ConnectionResetError:
        pass
    return got


def test_idle_clients_never_lock_the_operator_out(served: Served, capsys: pytest.CaptureFixture[str]) -> None:
    """Four times more idle connections than slots: every operator command is answered at once."""
    idle = []
    try:
        for _ in range(4 * MAX_CLIENTS):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(served.server.path)
            idle.append(s)
        for _ in range(5):
            t = time.monotonic()
            assert request(served.server.path, "ping", timeout=2) == {"op": "ping"}
            assert time.monotonic() - t < 0.5
        assert main(["show", "status", "nat", "--control", served.server.path]) == 0
        assert "192.168.0.11:5000" in capsys.readouterr().out
        # the idle ones that were closed to make room were told why
        assert b'"busy":true' in _read_all(idle[0])
        assert served.server.evicted >= 3 * MAX_CLIENTS
    finally:
        for s in idle:
            s.close()


def test_every_slot_answering_refuses_with_the_busy_status(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Clients that asked for a big answer and do not read it hold their slots until IDLE_TIMEOUT;
    a new command is refused with a busy answer (exit 5), and gets in once they are dropped."""
    reactor = Reactor()
    big = "x" * (4 << 20)
    server = ControlServer(str(tmp_path / "c.sock"), reactor, lambda req: big if req["op"] == "config" else "pong")
    hogs: list[socket.socket] = []
    result: dict[str, Any] = {}
    try:
        for _ in range(MAX_CLIENTS):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(server.path)
            s.sendall(b'{"op":"config"}\n')
            hogs.append(s)
            _pump(reactor, 2)
        assert len(server.clients) == MAX_CLIENTS and all(c.wbuf for c in server.clients.values())

        def ask() -> None:
            try:
                result["answer"] = request(server.path, "ping", timeout=5)
            except ClientError as e:
                result["error"] = e

        t = threading.Thread(target=ask)
        t.start()
        while t.is_alive():
            _pump(reactor, 1)
        assert result["error"].status == EXIT_BUSY and "busy" in result["error"].message
        assert server.refused == 1
        server.expire(time.monotonic() + IDLE_TIMEOUT + 1)  # the hogs took nothing for too long
        assert not server.clients
        t = threading.Thread(target=ask)
        t.start()
        while t.is_alive():
            _pump(reactor, 1)
        assert result["answer"] == "pong"
    finally:
        for s in hogs:
            s.close()
        server.close()


def test_request_timeout_closes_silent_connections(tmp_path: Path) -> None:
    reactor = Reactor()
    server = ControlServer(str(tmp_path / "c.sock"), reactor, lambda req: "pong")
    try:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(server.path)
        _pump(reactor)
        assert len(server.clients) == 1
        server.expire(time.monotonic() + 1.0)
        assert len(server.clients) == 1  # still within REQUEST_TIMEOUT
        server.expire(time.monotonic() + REQUEST_TIMEOUT + 0.5)
        assert not server.clients
        answer = json.loads(_read_all(s))
        assert answer["busy"] is True and "no request within" in answer["error"]
        s.close()
    finally:
        server.close()


def test_nested_and_huge_json_are_bad_requests_without_traceback(served: Served, caplog: pytest.LogCaptureFixture) -> None:
    deep = b"[" * 8000 + b"]" * 8000 + b"\n"  # within the size limit; json.loads would raise RecursionError
    huge_deep = b"[" * 100_000 + b"]" * 100_000 + b"\n"
    wide = b'{"op":"ping","x":"' + b"a" * (MAX_REQUEST + 10) + b'"}\n'
    nested_ok = b'{"op":"ping","x":' + b"[" * (MAX_NESTING - 1) + b"]" * (MAX_NESTING - 1) + b"}\n"
    nested_bad = b'{"op":"ping","x":' + b"[" * MAX_NESTING + b"]" * MAX_NESTING + b"}\n"
    with caplog.at_level(logging.DEBUG):
        answers = []
        for payload in (deep, wide, nested_bad, huge_deep, nested_ok):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.connect(served.server.path)
                s.sendall(payload)
                answers.append(json.loads(_read_all(s)))
    assert [a["ok"] for a in answers] == [False, False, False, False, True]
    assert "deeply nested" in answers[0]["error"] and "too long" in answers[1]["error"]
    assert "deeply nested" in answers[2]["error"] and "too long" in answers[3]["error"]
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    with pytest.raises(ProtocolError, match="deeply nested"):
        decode_request(b"[" * 5000)
    assert request(served.server.path, "ping") == {"op": "ping"}


def test_a_refusal_before_the_request_is_sent_still_reads_the_busy_line(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The daemon may refuse (and close) before the command has sent its request: the send fails
    with EPIPE, and the busy line the daemon wrote is still read (exit 5, not 3)."""
    path = str(tmp_path / "c.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)
    closed = threading.Event()

    def refuse() -> None:
        conn, _ = listener.accept()
        conn.send(b'{"ok":false,"busy":true,"error":"the daemon is busy"}\n')  # (sendall is patched below)
        conn.close()
        closed.set()
    t = threading.Thread(target=refuse)
    t.start()

    def late_sendall(self: socket.socket, data: bytes) -> None:
        closed.wait(5)
        raise BrokenPipeError(32, "Broken pipe")
    monkeypatch.setattr(socket.socket, "sendall", late_sendall)
    try:
        with pytest.raises(ClientError) as e:
            request(path, "ping", timeout=5)
        assert e.value.status == EXIT_BUSY and "busy" in e.value.message
    finally:
        t.join(5)
        listener.close()
