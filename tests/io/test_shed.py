"""Load shedding (passnat/io/shed.py): the XDP program, its level, and the daemon under a flood.

The level's control law is a pure function (tested alone); the program is the
kernel's to run: a namespace test attaches it through the real daemon, floods
the router with bench/pktgen.c (compiled here with gcc) so that its ring fills,
and checks that frames were shed and counted, that forwarding went on, that a
light load afterwards is shed nothing, and that a stop takes the program off
the interface.
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
        for itf in ("lan0", "lan1"):
            assert "prog/xdp" in lab.exec("r", "ip", "-d", "link", "show", "dev", itf).stdout or \
                "xdp" in lab.exec("r", "ip", "link", "show", "dev", itf).stdout, log.read_text()
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
        assert "load shedding off" not in log.read_text()
    finally:
        rc = proc.stop(20)
    assert rc == 0, log.read_text()
    for itf in ("lan0", "lan1"):
        assert "xdp" not in lab.exec("r", "ip", "link", "show", "dev", itf).stdout  # taken off at stop
