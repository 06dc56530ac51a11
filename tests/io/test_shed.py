"""Load shedding (passnat/io/shed.py): the XDP program, its level, and the daemon under a flood.

The level's control law is a pure function (tested alone); the program is the
kernel's to run: a namespace test attaches it through the real daemon, floods
the router with bench/pktgen.c (compiled here with gcc) so that its ring fills,
and checks that the program is on the interface only then, that frames were
shed and counted, that forwarding went on, that a light load afterwards is
shed nothing, and that the program comes off again once the flood is over.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from passnat.control.client import request
from passnat.io import link as link_mod
from passnat.io.link import SHED_EPISODE_END, SHED_OFF_AFTER, SHED_ON_AFTER, SHED_PROBE_AFTER, Link
from passnat.io.shed import STALE_MS, _program, adjust
from tests.io.netlab import SRV, NetLab

CONFIG = """\
interface lan0 add 192.168.0.1/24
interface lan1 add 203.0.113.1/24
nat napt add private 192.168.0.0-192.168.0.255 interface lan1
"""
ROOT = Path(__file__).resolve().parent.parent.parent


def test_the_level_rises_while_the_ring_fills_and_falls_when_it_drains() -> None:
    level = 0
    for _ in range(20):
        level = adjust(level, 0.75)
    assert level == 1024  # saturates
    assert adjust(1024, 0.75) == 1024 and adjust(0, 0.75) == 32 and adjust(0, 0.5) == 8
    assert adjust(0, 0.25) == 0 and adjust(300, 0.25) == 300  # a quarter full: hold (a buffer for bursts)
    steps = 0
    while level:
        level = adjust(level, 0.0)
        steps += 1
    assert 0 < steps < 30  # back to nothing within tens of turns
    assert adjust(0, 0.0) == 0


def test_the_program_is_well_formed() -> None:
    code, n = _program(7)
    assert len(code) == 8 * n and 30 <= n <= 64
    for i in range(n):
        op, regs, off = code[8 * i], code[8 * i + 1], int.from_bytes(code[8 * i + 2:8 * i + 4], "little", signed=True)
        if op & 0x07 == 0x05 and op not in (0x85, 0x95):  # a jump: stays inside the program
            assert 0 <= i + 1 + off < n
        assert regs & 0x0F <= 10 and regs >> 4 <= 10
    assert STALE_MS == 200


class _Program:
    """Stands for the XDP program on the interface (what Link.shed_turn drives)."""

    def __init__(self, clock: list[float]):
        self.clock = clock
        self.ifindex = 0
        self.level = 0
        self.set_at = 0.0
        self.shed = 0
        self.events: list[tuple[str, float]] = []

    @property
    def attached(self) -> bool:
        return self.ifindex != 0

    def attach(self) -> None:
        self.ifindex = 7
        self.events.append(("on", self.clock[0]))

    def detach(self) -> None:
        self.ifindex = self.level = 0
        self.events.append(("off", self.clock[0]))

    def set_level(self, level: int) -> None:
        self.level, self.set_at = level, self.clock[0]

    def keepalive(self) -> None:
        self.set_at = self.clock[0]


def _turns(link: Link, clock: list[float], fill: list[float], seconds: float, busy: bool, step: float = 0.005,
           shed_per_turn: int = 0) -> None:
    end = clock[0] + seconds
    while clock[0] < end:
        clock[0] += step
        if link.shed is not None and link.shed.level:  # type: ignore[union-attr]
            link.shed.shed += shed_per_turn  # type: ignore[misc]
        link.shed_turn(busy)


def test_the_program_is_on_the_interface_only_while_an_overload_lasts(monkeypatch: pytest.MonkeyPatch,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    clock, fill = [1000.0], [0.0]
    monkeypatch.setattr(link_mod.time, "monotonic", lambda: clock[0])
    link = Link("lan0", "veth0", shed=True)
    prog = _Program(clock)
    link.shed = prog  # type: ignore[assignment]
    monkeypatch.setattr(link, "ring_fill", lambda: fill[0])
    caplog.set_level("INFO", logger="passnat.io.link")
    # a busy loop with a ring up to half full, and a burst that fills it for less than SHED_ON_AFTER: off
    fill[0] = 0.5
    _turns(link, clock, fill, 1.0, busy=True)
    fill[0] = 0.75
    _turns(link, clock, fill, SHED_ON_AFTER * 0.6, busy=True)
    fill[0] = 0.25
    _turns(link, clock, fill, 0.5, busy=True)
    assert prog.events == []
    # an overload: the ring stays full; on after SHED_ON_AFTER, then off to probe after SHED_PROBE_AFTER,
    # and on again while the overload lasts
    fill[0] = 0.75
    start = clock[0]
    _turns(link, clock, fill, 5.0, busy=True, shed_per_turn=100)
    ons = [t - start for e, t in prog.events if e == "on"]
    offs = [t - start for e, t in prog.events if e == "off"]
    assert SHED_ON_AFTER <= ons[0] <= SHED_ON_AFTER + 0.02
    assert offs and SHED_PROBE_AFTER <= offs[0] - ons[0] <= SHED_PROBE_AFTER + 0.01
    assert len(ons) >= 2 and SHED_ON_AFTER <= ons[1] - offs[0] <= SHED_ON_AFTER + 0.02  # back on
    assert prog.level > 0
    # the overload over: off once nothing was shed for SHED_OFF_AFTER, and stays off
    fill[0] = 0.0
    mark = clock[0]
    _turns(link, clock, fill, 2.0, busy=False)
    assert prog.events[-1][0] == "off" and prog.events[-1][1] - mark <= SHED_OFF_AFTER + 0.4
    # one log line when the overload began, one when it is over (not one per probe)
    _turns(link, clock, fill, SHED_EPISODE_END, busy=False, step=0.5)
    lines = [r.getMessage() for r in caplog.records]
    assert sum("load shedding on" in line for line in lines) == 1, lines
    assert sum("load shedding off again" in line for line in lines) == 1, lines
    assert f"{prog.shed} frames shed during the overload" in lines[-1]


def test_a_load_between_the_two_peaks_finds_the_program_off(monkeypatch: pytest.MonkeyPatch) -> None:
    # with the program on, passnat's own peak is lower (veth); an offered rate between the two peaks
    # keeps the ring filling while it is on, but not once the probe takes it off
    clock, fill = [0.0], [0.75]
    monkeypatch.setattr(link_mod.time, "monotonic", lambda: clock[0])
    link = Link("lan0", "veth0", shed=True)
    prog = _Program(clock)
    link.shed = prog  # type: ignore[assignment]

    between = [False]

    def ring_fill() -> float:  # an overload first, then the load between the peaks
        return 0.75 if prog.attached or not between[0] else 0.125

    monkeypatch.setattr(link, "ring_fill", ring_fill)
    _turns(link, clock, fill, SHED_ON_AFTER + 0.01, busy=True)
    assert prog.attached
    between[0] = True
    _turns(link, clock, fill, 10.0, busy=True)
    assert not prog.attached and [e for e, _ in prog.events] == ["on", "off"]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NetLab]:
    if os.geteuid() != 0:
        pytest.fail("the shedding test needs root (network namespaces, XDP)")
    lab = NetLab("shed", tmp_path_factory.mktemp("lab"))
    try:
        lab.build_direct_lab()
        yield lab
    finally:
        lab.close()


def _pktgen(tmp: Path) -> Path:
    exe = tmp / "pktgen"
    subprocess.run(["gcc", "-O2", "-o", str(exe), str(ROOT / "bench" / "pktgen.c")], check=True)
    return exe


def _counter(ctl: str, name: str) -> int:
    data = request(ctl, "counters")
    for d in data["link"]["drops"]:
        if d["name"] == name:
            return int(d["count"])
    raise KeyError(name)


def test_a_flood_is_shed_before_the_kernel_and_forwarding_goes_on(lab: NetLab, tmp_path: Path) -> None:
    exe = _pktgen(tmp_path)
    conf = tmp_path / "r.conf"
    conf.write_text(CONFIG)
    ctl = str(tmp_path / "c.sock")
    log = tmp_path / "passnat.log"
    proc = lab.spawn("r", ["taskset", "-c", "1", sys.executable, "-m", "passnat", "run", "--config", str(conf),
                           "--control", ctl, "--prepare", "--log-level", "info"], stderr_path=log)
    try:
        for _ in range(100):
            try:
                request(ctl, "ping", timeout=1)
                break
            except Exception:  # noqa: BLE001
                time.sleep(0.1)
        assert "load shedding by XDP under overload" in log.read_text()  # loaded, and the driver takes it
        for itf in ("lan0", "lan1"):
            assert "xdp" not in lab.exec("r", "ip", "link", "show", "dev", itf).stdout  # not on while idle
        gen = [str(exe), "--ifname", "eth0", "--smac", lab.mac("pc", "eth0"), "--dmac", lab.mac("r", "lan0"),
               "--src", "192.168.0.100", "--nsrc", "10", "--sport", "10000", "--endpoints", "1000", "--dst", SRV,
               "--dport", "9", "--size", "60", "--mode", "flows"]
        lab.exec("pc", *gen, "--rate", "5000", "--seconds", "1")  # sessions made, next hop resolved
        assert _counter(ctl, "rx_shed") == 0  # a light load is shed nothing
        flood = lab.exec("pc", "taskset", "-c", "0", *gen, "--rate", "0", "--seconds", "3", timeout=60)
        sent = json.loads(flood.stdout.strip().splitlines()[-1])["sent"]
        shed = _counter(ctl, "rx_shed")
        forwarded = request(ctl, "counters")["interfaces"]["lan1"]["tx_packets"]
        assert shed > 0, f"nothing shed of {sent} frames"
        assert forwarded > 10000
        time.sleep(0.5)
        ping = lab.exec("pc", "ping", "-c", "10", "-i", "0.05", "-W", "1", SRV, check=False).stdout
        assert " 0% packet loss" in ping, ping
        assert _counter(ctl, "rx_shed") == shed  # the flood over: nothing shed any more
        assert "lan0: overloaded (frames lost at the full receive ring): load shedding on" in log.read_text()
        assert "load shedding off:" not in log.read_text()  # never refused
        for _ in range(20):  # off once nothing is shed (SHED_OFF_AFTER after the backlog is worked off)
            if "xdp" not in lab.exec("r", "ip", "link", "show", "dev", "lan0").stdout:
                break
            time.sleep(0.1)
        assert "xdp" not in lab.exec("r", "ip", "link", "show", "dev", "lan0").stdout
        for _ in range(100):  # one line when the overload is over
            if "lan0: load shedding off again" in log.read_text():
                break
            time.sleep(0.1)
        assert "lan0: load shedding off again" in log.read_text()
        assert _counter(ctl, "rx_shed") == shed  # the count stays
    finally:
        rc = proc.stop(20)
    assert rc == 0, log.read_text()
    for itf in ("lan0", "lan1"):
        assert "xdp" not in lab.exec("r", "ip", "link", "show", "dev", itf).stdout  # taken off at stop


def test_a_refused_attach_under_overload_turns_shedding_off_and_the_loop_goes_on(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    clock, fill = [0.0], [0.75]
    monkeypatch.setattr(link_mod.time, "monotonic", lambda: clock[0])
    link = Link("lan0", "veth0", shed=True)
    prog = _Program(clock)
    closed = []

    def refuse() -> None:
        raise OSError(19, "No such device")

    monkeypatch.setattr(prog, "attach", refuse)
    monkeypatch.setattr(prog, "close", lambda: closed.append(True), raising=False)
    link.shed = prog  # type: ignore[assignment]
    monkeypatch.setattr(link, "ring_fill", lambda: fill[0])
    _turns(link, clock, fill, 1.0, busy=True)  # no exception out of the loop's turn
    assert link.shed is None and closed == [True]
    assert any("load shedding off: the kernel refused its XDP program on veth0 (No such device)" in r.getMessage()
               for r in caplog.records)


def test_pyroute2_errors_come_out_as_oserror(monkeypatch: pytest.MonkeyPatch) -> None:
    import pyroute2

    from passnat.io.shed import Shedder

    class Refusing:
        def __enter__(self) -> Refusing:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

        def link_lookup(self, ifname: str) -> list[int]:
            return [] if ifname == "gone0" else [5]

        def link(self, *a: object, **kw: object) -> None:
            from pyroute2.netlink.exceptions import NetlinkError
            raise NetlinkError(95, "Operation not supported")

    monkeypatch.setattr(pyroute2, "IPRoute", Refusing)
    for name, code in (("gone0", 19), ("veth0", 95)):
        s = Shedder(name)
        with pytest.raises(OSError) as info:
            s.attach()
        assert info.value.errno == code and not s.attached
