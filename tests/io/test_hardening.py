"""Issue 13 acceptance in namespaces: the real daemon, real hosts, the default configuration.

(a) One LAN host floods 200,000 distinct UDP flows while another opens a TCP
    connection and a UDP exchange every 100 ms: at least 99 % of the second
    host's sessions work (the flood meets its per-host share and the short
    unreplied timer; with the share turned off, eviction keeps room).
(c) 802.1Q/802.1ad-tagged frames, spoofed sources in both directions and packets
    from the WAN addressed straight to a LAN host are dropped and counted; the
    documented options (``nat option inbound-routing plain``, ``option ip
    unicast-rpf none``) bring plain routing back, applied with a SIGHUP reload.

Namespaces ``pn<pid>-hd-*``, always deleted; every process stopped by its pid.
Traffic goes only to the namespaces' own addresses.
"""
from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from passnat import speedups
from tests.io.netlab import PC, ROUTER_WAN, SRV, NetLab, Proc
from tests.io.test_integration import Passnat

pytestmark = pytest.mark.integration

HELPER = str(Path(__file__).with_name("harden_peer.py"))

CONFIG = f"""\
hostname "hd"
interface lan0 add 192.168.0.1/24
interface lan1 add {ROUTER_WAN}/24
nat napt add private 192.168.0.0-192.168.0.255 interface lan1
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NetLab]:
    if os.geteuid() != 0:
        pytest.fail("the integration tests need root (network namespaces, AF_PACKET)")
    lab = NetLab("hd", tmp_path_factory.mktemp("lab"))
    try:
        lab.build_router_lab()
        # the server drops the flood's datagrams quietly (no ICMP port unreachable back through the NAT)
        lab.exec("srv", "nft", "add table inet hd")
        lab.exec("srv", "nft", "add chain inet hd input { type filter hook input priority 0 ; }")
        lab.exec("srv", "nft", "add rule inet hd input udp dport != { 7007, 4445 } drop")
        yield lab
    finally:
        lab.close()


def helper(lab: NetLab, ns: str, *args: str) -> Proc:
    return lab.spawn(ns, [sys.executable, HELPER, *args])


@pytest.fixture
def router(lab: NetLab, tmp_path: Path) -> Iterator[Passnat]:
    r = Passnat(lab, tmp_path, CONFIG)
    try:
        yield r
    finally:
        r.stop()


def drops(router: Passnat) -> dict[str, int]:
    data = router.ask("counters")
    return {d["name"]: int(d["count"]) for sec in ("engine", "link") for d in data[sec]["drops"] if d["count"]}


def events(router: Passnat) -> dict[str, int]:
    return {k: int(v) for k, v in router.ask("counters")["engine"]["events"].items()}


# ---------------------------------------------------------------- (a) fairness


@pytest.mark.parametrize(("extra", "flows"), [
    ("", 200_000),
    ("nat session maximum 6000\nnat session restricted-per-private-ip 100000\n", 100_000),  # no share
], ids=["defaults", "no-share-eviction"])
def test_a_flooding_host_does_not_lock_out_the_others(lab: NetLab, router: Passnat, extra: str, flows: int) -> None:
    router.conf.write_text(CONFIG + extra)
    router.start()
    serve = helper(lab, "srv", "serve", "7008", "7007", "60")
    serve.wait_line("ready")
    # new flows a second: 20 s for 200,000. The pure-Python data plane (PASSNAT_PURE=1) cannot make
    # 10,000 sessions a second (with eviction it lost ~16 % at the full ring and the shedding program,
    # the victim's frames among them): this test is about the table, not the CPU, so half that there
    rate = 10_000 if speedups.module() is not None else 5_000
    flood = helper(lab, "pc", "flood", SRV, str(flows), str(rate))
    time.sleep(1.0)  # the flood has filled the share (integration tests may wait on real time)
    victim = helper(lab, "ls", "sessions", SRV, "7008", "7007", str(flows / rate - 3), "0.1")
    got: dict[str, Any] = victim.result(timeout=90)
    sent = flood.result(timeout=90)
    serve.stop()
    tried = got["tcp_tried"] + got["udp_tried"]
    ok = got["tcp_ok"] + got["udp_ok"]
    c, ev = drops(router), events(router)
    assert sent["sent"] == flows, sent
    assert tried >= 2 * 10 * (flows / rate - 4), got
    assert ok >= 0.99 * tried, f"{got}; drops {c}; events {ev}"
    sessions = router.ask("status_nat")
    flood_sessions = sum(1 for s in sessions if s.get("inside") == PC)
    if not extra:
        # the flood met its share: a quarter of 65,536
        assert c.get("nat_session_limit_per_private_ip", 0) > flows / 4, c
        assert flood_sessions <= 16384
        assert all(s["timer"] == "udp-unreplied" for s in sessions if s.get("inside") == PC and s["protocol"] == "udp")
    else:
        assert ev.get("nat_session_evicted", 0) > flows / 4, ev
        assert c.get("nat_session_full", 0) == 0, c
    assert c.get("internal_error", 0) == 0
    assert router.stop() == 0


# ---------------------------------------------------------------- (c) what is not forwarded


def test_tagged_spoofed_and_direct_to_lan_packets_are_dropped_and_counted(lab: NetLab, router: Passnat) -> None:
    router.start()
    lab.exec("srv", "ip", "route", "replace", "192.168.0.0/24", "via", ROUTER_WAN)  # "the internet" aims at the LAN
    try:
        _dropped_by_default(lab, router)
        _plain_routing_comes_back(lab, router)
    finally:
        lab.exec("srv", "ip", "route", "del", "192.168.0.0/24", check=False)


def _listen(lab: NetLab, ns: str, port: str, seconds: str = "15") -> Proc:
    p = lab.peer(ns, "udp-listen", port, seconds)
    p.wait_line("ready")
    return p


def _dropped_by_default(lab: NetLab, router: Passnat) -> None:
    r_lan0, r_lan1 = lab.mac("r", "lan0"), lab.mac("r", "lan1")
    pc_mac, srv_mac = lab.mac("pc", "eth0"), lab.mac("srv", "eth0")
    before = drops(router)
    srv_sink, pc_sink = _listen(lab, "srv", "4445"), _listen(lab, "pc", "4445")
    lan = helper(lab, "pc", "raw", "eth0",
                 # tagged frames (one from another VLAN on the same port must not reach the NAT)
                 f"vlan/{pc_mac}/{r_lan0}/{PC}/{SRV}", f"qinq/{pc_mac}/{r_lan0}/{PC}/{SRV}",
                 # spoofed sources from the LAN: not a LAN address (no route back), the WAN's own subnet
                 f"ip/10.9.9.9/{SRV}/udp", f"ip/203.0.113.77/{SRV}/udp")
    wan = helper(lab, "srv", "raw", "eth0",
                 f"vlan/{srv_mac}/{r_lan1}/{SRV}/{ROUTER_WAN}",
                 f"ip/192.168.0.99/{PC}/udp",  # a LAN address from the WAN
                 # straight to a LAN host from the WAN: TCP SYN, UDP, ICMP, ESP, GRE
                 *(f"ip/{SRV}/{PC}/{proto}" for proto in ("tcp-syn", "udp", "icmp", "esp", "gre")))
    assert lan.result()["sent"] == 12 and wan.result()["sent"] == 21
    assert srv_sink.result()["count"] == 0 and pc_sink.result()["count"] == 0
    after = drops(router)
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    assert delta.get("vlan_tagged", 0) == 9, delta
    assert delta.get("spoofed_source", 0) == 9, delta
    assert delta.get("inbound_untranslated", 0) == 15, delta
    # and the hosts' own traffic still flows
    echo = lab.peer("srv", "udp-echo", "7007", "4")
    echo.wait_line("ready")
    res = lab.peer("pc", "udp-ping", SRV, "7007", "5").result()
    echo.result()
    assert res["received"] == 5


def _plain_routing_comes_back(lab: NetLab, router: Passnat) -> None:
    assert router.proc is not None
    router.conf.write_text(CONFIG + "nat option inbound-routing plain\noption ip unicast-rpf none\n")
    router.proc.signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "inbound-routing plain" not in router.ask("config") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "option ip unicast-rpf none" in router.ask("config")
    before = drops(router)
    srv_sink, pc_sink = _listen(lab, "srv", "4445", "8"), _listen(lab, "pc", "4445", "8")
    helper(lab, "srv", "raw", "eth0", f"ip/{SRV}/{PC}/udp").result()          # routed to the LAN host
    helper(lab, "pc", "raw", "eth0", f"ip/10.9.9.9/{SRV}/udp").result()       # a foreign source, as it is
    assert pc_sink.result()["count"] == 3
    assert srv_sink.result()["count"] == 3
    after = drops(router)
    assert after.get("inbound_untranslated", 0) == before.get("inbound_untranslated", 0)
    assert after.get("spoofed_source", 0) == before.get("spoofed_source", 0)
