"""Two real ``passnat run`` daemons with ``ha sync`` in namespaces, roles switched by hand.

::

    pc 192.168.0.11 ── lsw ─┬─ lan0  r1  lan1 ─┬─ wsw ── srv 203.0.113.10
                            └─ lan0  r2  lan1 ─┘
                              r1 hasync 10.255.0.1/30 ── 10.255.0.2/30 hasync r2

keepalived is left out here (tests/lab/test_ha.py has it with real VPN
peers): this is the daemon's side -- the backup forwards nothing and answers
no ARP for the shared addresses, the sync connection carries the sessions,
``passnat ha master`` on the backup takes over with the same mappings and
gratuitous ARP, a planned switch back loses nothing, a restarted router gets
the table by a full transfer, and a stranger cannot connect.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from passnat.control.client import ClientError, request
from tests.io.netlab import PC, ROUTER_LAN, SRV, NetLab, Proc

pytestmark = pytest.mark.integration

KEY = "lab-shared-key-0123456789"
BASE = """\
hostname "ha"
interface lan0 add 192.168.0.1/24
interface lan1 add 203.0.113.1/24
nat napt add private 192.168.0.0/24 interface lan1
nat timeout protocol udp 120
ha sync interface hasync
ha sync port 7822
ha sync key "{key}"
ha sync local {local}
ha sync peer {peer}
"""
SYNC = {"r1": ("10.255.0.1", "10.255.0.2"), "r2": ("10.255.0.2", "10.255.0.1")}


class Router:
    def __init__(self, lab: NetLab, name: str, work: Path):
        self.lab, self.name = lab, name
        self.dir = work / name
        self.dir.mkdir(parents=True, exist_ok=True)
        local, peer = SYNC[name]
        self.conf = self.dir / "router.conf"
        self.conf.write_text(BASE.format(key=KEY, local=local, peer=peer))
        self.ctl = str(self.dir / "ctl.sock")
        self.log = self.dir / "passnat.log"
        self.proc: Proc | None = None

    def start(self, role: str | None = None) -> None:
        if role is not None:
            (self.dir / "ha-role").write_text(role + "\n")
        argv = [sys.executable, "-m", "passnat", "run", "--config", str(self.conf), "--control", self.ctl,
                "--log-level", "debug", "--prepare"]
        self.proc = self.lab.spawn(self.name, argv, stderr_path=self.log)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if not self.proc.alive():
                raise AssertionError(f"{self.name}: passnat exited:\n{self.log_text()}")
            try:
                request(self.ctl, "ping", timeout=2)
                return
            except ClientError:
                time.sleep(0.1)
        raise AssertionError(f"{self.name}: not ready:\n{self.log_text()}")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.signal(9)
        self.proc.popen.wait(10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop(20)
            self.proc = None

    def ha(self, role: str | None = None) -> dict[str, Any]:
        if role is None:
            return request(self.ctl, "ha_status")  # type: ignore[no-any-return]
        return request(self.ctl, "ha_role", role=role)  # type: ignore[no-any-return]

    def sessions(self) -> list[dict[str, Any]]:
        return [s for s in request(self.ctl, "status_nat") if s.get("id") is not None]

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", self.lab.ns(self.name), sys.executable, "-m", "passnat",
                               *args, "--control", self.ctl], capture_output=True, text=True, timeout=30)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def wait(cond: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[NetLab, Router, Router]]:
    if os.geteuid() != 0:
        pytest.fail("the integration tests need root (network namespaces, AF_PACKET)")
    work = tmp_path_factory.mktemp("ha")
    lab = NetLab("ha", work)
    routers: list[Router] = []
    try:
        for n in ("r1", "r2", "lsw", "wsw", "pc", "srv"):
            lab.add_ns(n)
        for sw in ("lsw", "wsw"):
            lab.exec(sw, "ip", "link", "add", "name", "br0", "type", "bridge")
            lab.exec(sw, "ip", "link", "set", "br0", "up")
        ports = {"lsw": 0, "wsw": 0}

        def wire(host: str, ifname: str, sw: str) -> None:
            port = f"p{ports[sw]}"
            ports[sw] += 1
            lab.veth(host, ifname, sw, port)
            lab.exec(sw, "ip", "link", "set", port, "master", "br0")
            lab.offloads(host, ifname, tso=False)

        for r in ("r1", "r2"):
            wire(r, "lan0", "lsw")
            wire(r, "lan1", "wsw")
            lab.exec(r, "sysctl", "-qw", "net.ipv4.ip_forward=0")
        wire("pc", "eth0", "lsw")
        wire("srv", "eth0", "wsw")
        lab.veth("r1", "hasync", "r2", "hasync")
        lab.exec("r1", "ip", "addr", "add", "10.255.0.1/30", "dev", "hasync")
        lab.exec("r2", "ip", "addr", "add", "10.255.0.2/30", "dev", "hasync")
        lab.host("pc", f"{PC}/24", ROUTER_LAN)
        lab.exec("srv", "ip", "addr", "add", f"{SRV}/24", "dev", "eth0")
        r1, r2 = Router(lab, "r1", work), Router(lab, "r2", work)
        routers = [r1, r2]
        r1.start("master")
        r2.start("backup")
        wait(lambda: r1.ha()["sending"] is not None and r1.ha()["sending"]["state"] == "ready"
             and r2.ha()["sending"] is not None and r2.ha()["sending"]["state"] == "ready", 15, "sync up")
        yield lab, r1, r2
    finally:
        for r in routers:
            r.stop()
        lab.close()


class UdpFlow:
    """pc sends a numbered datagram every 50 ms from one port; srv echoes; both sides log."""

    def __init__(self, lab: NetLab, sport: int = 40123, dport: int = 9999):
        self.lab = lab
        self.srv = lab.spawn("srv", [sys.executable, "-c", SRV_ECHO, str(dport)])
        self.srv.wait_line("ready")
        self.pc = lab.spawn("pc", [sys.executable, "-c", PC_SENDER, SRV, str(dport), str(sport)])
        self.pc.wait_line("ready")

    def result(self) -> tuple[dict[str, Any], dict[str, Any]]:
        self.pc.signal(15)
        self.srv.signal(15)
        return self.pc.result(10), self.srv.result(10)


SRV_ECHO = """
import json, signal, socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", int(sys.argv[1]))); s.settimeout(0.1)
peers = {}
stop = []
signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
print("ready", flush=True)
while not stop:
    try:
        d, a = s.recvfrom(2048)
    except (TimeoutError, InterruptedError):
        continue
    peers["%s:%d" % a] = peers.get("%s:%d" % a, 0) + 1
    s.sendto(d, a)
print(json.dumps({"peers": peers}), flush=True)
"""

PC_SENDER = """
import json, signal, socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", int(sys.argv[3]))); s.setblocking(False)
dst = (sys.argv[1], int(sys.argv[2]))
stop = []
signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
print("ready", flush=True)
sent, got, times, i, t0 = 0, 0, [], 0, time.monotonic()
nxt = t0
while not stop:
    now = time.monotonic()
    if now >= nxt:
        s.sendto(b"%d" % i, dst); i += 1; sent += 1; nxt = now + 0.05
    try:
        while True:
            s.recvfrom(2048); got += 1; times.append(round(time.monotonic() - t0, 3))
    except (BlockingIOError, InterruptedError):
        pass
    time.sleep(0.005)
gaps = [b - a for a, b in zip(times, times[1:])]
print(json.dumps({"sent": sent, "got": got, "max_gap": round(max(gaps), 3) if gaps else None}), flush=True)
"""


def arp_mac(lab: NetLab, ns: str, addr: str) -> str:
    out = lab.exec(ns, "ip", "neigh", "show", addr, check=False).stdout.split()
    return out[out.index("lladdr") + 1] if "lladdr" in out else ""


def test_backup_holds_the_masters_sessions_and_a_switch_keeps_the_flow(pair: tuple[NetLab, Router, Router]) -> None:
    lab, r1, r2 = pair
    assert r1.ha()["role"] == "master" and r2.ha()["role"] == "backup"
    assert not r2.ha()["forwarding"]
    flow = UdpFlow(lab)
    try:
        wait(lambda: any(s["protocol"] == "udp" and s["inside_port"] == 40123 for s in r2.sessions()), 5,
             "the flow's session on the backup")
        m1 = {(s["inside"], s["inside_port"]): s["outside_port"] for s in r1.sessions() if s["protocol"] == "udp"}
        m2 = {(s["inside"], s["inside_port"]): s["outside_port"] for s in r2.sessions() if s["protocol"] == "udp"}
        assert m1 == m2
        r1_mac = lab.mac("r1", "lan0")
        assert arp_mac(lab, "pc", ROUTER_LAN) == r1_mac
        # the backup reads and drops (it sees broadcasts at least), and answers no ARP
        time.sleep(0.5)
        # planned switch: r1 steps down first (flushing), then r2 takes over and announces itself
        t0 = time.monotonic()
        r1.ha("backup")
        r2.ha("master")
        r2_mac = lab.mac("r2", "lan0")
        wait(lambda: arp_mac(lab, "pc", ROUTER_LAN) == r2_mac, 3, "pc's ARP entry moving to r2 (gratuitous ARP)")
        took = time.monotonic() - t0
        time.sleep(1.5)
        pc_res, srv_res = flow.result()
    finally:
        for p in (flow.pc, flow.srv):
            if p.alive():
                p.stop(5)
    assert took < 3.0
    assert len(srv_res["peers"]) == 1, f"the server saw the flow from more than one mapping: {srv_res}"
    assert pc_res["got"] >= pc_res["sent"] - 10, pc_res
    assert pc_res["max_gap"] < 1.0, pc_res
    assert r2.ha()["forwarding"] and not r1.ha()["forwarding"]
    # r2 forwarded the flow since the switch; r1 sent none of it
    assert _events(r2)["ha_became_master"] == 1 and _events(r1)["ha_became_backup"] == 1
    tx_before = _tx(r1)
    time.sleep(0.5)
    assert _tx(r1) == tx_before, "a backup sends nothing"


def _events(r: Router) -> dict[str, int]:
    return request(r.ctl, "counters")["link"]["events"]  # type: ignore[no-any-return]


def _tx(r: Router) -> int:
    return sum(int(i["tx_packets"]) for i in request(r.ctl, "counters")["interfaces"].values())


def test_restarted_router_gets_a_full_transfer_and_a_switch_back_loses_nothing(
        pair: tuple[NetLab, Router, Router]) -> None:
    lab, r1, r2 = pair
    if r2.ha()["role"] != "master":
        r1.ha("backup")
        r2.ha("master")
    flow = UdpFlow(lab, sport=40200, dport=9998)
    try:
        wait(lambda: any(s["inside_port"] == 40200 for s in r1.sessions()), 5, "session on r1")
        r1.kill()
        r1.start()  # the role recorded last: backup
        assert r1.ha()["role"] == "backup"
        wait(lambda: any(s["inside_port"] == 40200 for s in r1.sessions()), 10, "the full transfer to r1")
        st = r1.ha()
        assert st["last_bulk"].get("received"), st
        n2 = {(s["inside"], s["inside_port"], s["outside_port"]) for s in r2.sessions()}
        n1 = {(s["inside"], s["inside_port"], s["outside_port"]) for s in r1.sessions()}
        assert n1 == n2
        r2.ha("backup")
        r1.ha("master")
        time.sleep(2.0)
        pc_res, srv_res = flow.result()
    finally:
        for p in (flow.pc, flow.srv):
            if p.alive():
                p.stop(5)
    assert len(srv_res["peers"]) == 1, srv_res
    assert pc_res["got"] >= pc_res["sent"] - 10, pc_res


def test_cli_status_and_a_stranger_is_refused(pair: tuple[NetLab, Router, Router]) -> None:
    lab, r1, r2 = pair
    res = r1.cli("ha", "status")
    assert res.returncode == 0 and "role:" in res.stdout and "sync peer: 10.255.0.2" in res.stdout, res
    js = json.loads(r2.cli("ha", "status", "--json").stdout)
    assert js["peer"] == "10.255.0.1"
    check = subprocess.run(["ip", "netns", "exec", lab.ns("r1"), sys.executable, "-S",
                            str(Path(__file__).parents[2] / "passnat" / "ha" / "check.py"), "--control", r1.ctl],
                           capture_output=True, text=True, timeout=10)
    assert check.returncode == 0, check
    # a connection from another address than the peer's is refused and counted
    before = r1.ha()["counters"].get("ha_sync_refused_address", 0)
    lab.exec("r1", "ip", "addr", "add", "10.255.0.5/30", "dev", "hasync", check=False)
    with_socket = ("import socket;s=socket.create_connection(('10.255.0.1',7822),timeout=2,"
                   "source_address=('10.255.0.5',0));print(s.recv(10))")
    subprocess.run(["ip", "netns", "exec", lab.ns("r1"), sys.executable, "-c", with_socket],
                   capture_output=True, timeout=10)
    lab.exec("r1", "ip", "addr", "del", "10.255.0.5/30", "dev", "hasync", check=False)
    wait(lambda: r1.ha()["counters"].get("ha_sync_refused_address", 0) > before, 5, "refusal counted")
    assert socket is not None
