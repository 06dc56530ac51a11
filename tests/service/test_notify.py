"""sd_notify over a fake $NOTIFY_SOCKET: the messages a Type=notify unit sees, in order.

The daemon-level test drives a ``Daemon`` built on fake rings (tests/io/fakes.py)
through ready, a SIGHUP reload (valid, then refused) and a clean stop; the real
daemon in namespaces does the same in tests/service/test_service_integration.py.
"""
from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from passnat.service.notify import Notifier
from tests.io.fakes import CONFIG, FakeTx, make_daemon


class FakeSystemd:
    """A bound Unix datagram socket standing in for systemd's notify socket."""

    def __init__(self, path: str, abstract: bool = False):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + path if abstract else path)
        self.sock.settimeout(0.5)
        self.env = "@" + path if abstract else path

    def messages(self) -> list[str]:
        out = []
        self.sock.setblocking(False)
        try:
            while True:
                out.append(self.sock.recv(4096).decode())
        except BlockingIOError:
            pass
        self.sock.settimeout(0.5)
        return out

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def systemd(tmp_path: Path) -> Iterator[FakeSystemd]:
    s = FakeSystemd(str(tmp_path / "notify.sock"))
    yield s
    s.close()


def test_no_socket_means_no_notification() -> None:
    n = Notifier({})
    assert not n.enabled and not n.ready("x") and not n.stopping() and not n.watchdog(1e9)


def test_messages_reach_a_path_socket(systemd: FakeSystemd) -> None:
    n = Notifier({"NOTIFY_SOCKET": systemd.env})
    assert n.ready("forwarding on lan0=eth1") and n.reloading() and n.ready() and n.stopping()
    got = systemd.messages()
    assert got[0] == "READY=1\nSTATUS=forwarding on lan0=eth1"
    assert got[1].startswith("RELOADING=1\nMONOTONIC_USEC=") and int(got[1].split("=")[-1]) > 0
    assert got[2:] == ["READY=1", "STOPPING=1"]
    n.close()


def test_abstract_socket_and_watchdog() -> None:
    s = FakeSystemd(f"passnat-test-{os.getpid()}", abstract=True)
    try:
        n = Notifier({"NOTIFY_SOCKET": s.env, "WATCHDOG_USEC": "4000000", "WATCHDOG_PID": str(os.getpid())})
        assert n.watchdog_interval == 2.0
        assert n.watchdog(100.0) and not n.watchdog(101.0) and n.watchdog(102.0)
        assert s.messages() == ["WATCHDOG=1", "WATCHDOG=1"]
        other = Notifier({"NOTIFY_SOCKET": s.env, "WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "1"})
        assert other.watchdog_interval is None  # the watchdog is meant for another process
    finally:
        s.close()


def test_a_gone_socket_never_raises(tmp_path: Path) -> None:
    n = Notifier({"NOTIFY_SOCKET": str(tmp_path / "nobody")})
    assert n.enabled and not n.ready() and not n.stopping()


def test_daemon_start_reload_refused_reload_stop_in_order(tmp_path: Path, systemd: FakeSystemd,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", systemd.env)
    d, _rings, _txs, _clock = make_daemon(tmp_path)
    try:
        d.service.notify = Notifier()
        d.service.ready()
        conf = Path(d.options.config_path)
        turns = {"n": 0}
        real = d.service.housekeeping

        def housekeeping(mono: float) -> None:
            real(mono)
            turns["n"] += 1
            if turns["n"] == 1:
                conf.write_text(CONFIG + "interface lan0 add bogus\n")  # the next reload is refused
                d.reload_requested = True
            else:
                d.stopping = True

        monkeypatch.setattr(d.service, "housekeeping", housekeeping)
        conf.write_text(CONFIG + "nat timeout protocol udp 77\n")
        d.reload_requested = True
        d.run()
        for link in d.links.values():
            link.ring = None  # the fake rings have nothing to close
        d.stop()
    finally:
        for tx in FakeTx.opened:
            try:
                tx.close()
            except OSError:
                pass  # closed by d.stop() already
        FakeTx.opened.clear()
    got = [m.split("\n")[0] for m in systemd.messages()]
    assert got == ["READY=1", "RELOADING=1", "READY=1", "RELOADING=1", "READY=1", "STOPPING=1"], got
    assert d.counters["config_reloads"] == 1 and d.counters["config_reloads_refused"] == 1
    assert "reload REFUSED" in d.service.last_reload
