"""The control socket: server in a reactor, client requests, errors and exit codes."""
from __future__ import annotations

import os
import socket
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from passnat.control.cli import main
from passnat.control.client import EXIT_ERROR, EXIT_NO_DAEMON, ClientError, request
from passnat.control.commands import add_parsers
from passnat.control.protocol import ProtocolError, decode_request
from passnat.control.server import ControlError, ControlServer
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
