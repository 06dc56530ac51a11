"""Hairpinning through the real daemon (issue 10, R26/R27): two LAN hosts on a Linux bridge.

    pc  192.168.0.11 ─┐
                       br0 ── lan0  passnat  lan1 ── srv 203.0.113.10
    ls  192.168.0.50 ─┘

With ``nat reflect add interface lan0`` the PC reaches the LAN server (``ls``)
through the router's global addresses -- a SNAPT port forward and a ``nat
static`` address -- with UDP, TCP (4 MB, checksummed) and ICMP echo; the
server sees the PC's external mapping (the address and port the WAN server
``srv`` sees for the same socket); the replies come back.  Without reflection
the PC gets a RST / ICMP port unreachable at once.  Needs root; namespaces
``pn<pid>-hp-*`` are always deleted and every process is stopped by its pid.
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from scapy.utils import RawPcapNgReader

from passnat.control.format import format_status_nat
from tests.io.netlab import LS, PC, ROUTER_LAN, ROUTER_WAN, SRV, NetLab
from tests.io.test_integration import Passnat, ping

pytestmark = pytest.mark.integration

STATIC_G = "203.0.113.5"
MB = 1 << 20
HEAD = f"""\
hostname "hp"
interface lan0 add {ROUTER_LAN}/24
interface lan1 add {ROUTER_WAN}/24
nat napt add private 192.168.0.0-192.168.0.255 interface lan1
nat option reflect listed
"""
SNAPT = f"""\
nat snapt add protocol tcpudp listen 7000 forward {LS} 7000 interface lan1
nat snapt add protocol icmp forward {LS} interface lan1
"""
REFLECT = "nat reflect add interface lan0\n"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NetLab]:
    if os.geteuid() != 0:
        pytest.fail("the integration tests need root (network namespaces, AF_PACKET)")
    lab = NetLab("hp", tmp_path_factory.mktemp("lab"))
    try:
        lab.build_router_lab()
        yield lab
    finally:
        lab.close()


@pytest.fixture
def daemon(lab: NetLab, tmp_path: Path) -> Iterator[list[Passnat]]:
    """Started by the test with its configuration; always stopped."""
    started: list[Passnat] = []
    try:
        yield started
    finally:
        for d in started:
            d.stop()


def start(lab: NetLab, tmp_path: Path, started: list[Passnat], config: str) -> Passnat:
    d = Passnat(lab, tmp_path, config)
    started.append(d)
    d.start()
    return d


def external_mapping(lab: NetLab, sport: int) -> str:
    """``address:port`` the WAN server sees for the PC's UDP socket bound to ``sport``."""
    echo = lab.peer("srv", "udp-echo", "7007", "4")
    echo.wait_line("ready")
    res = lab.peer("pc", "udp-ping", SRV, "7007", "3", str(sport)).result()
    assert res["received"] >= 2, res
    (peer,) = echo.result()["peers"]
    return str(peer)


def udp_through(lab: NetLab, dst: str, port: int, sport: int) -> tuple[dict, list[str]]:
    echo = lab.peer("ls", "udp-echo", str(port), "5")
    echo.wait_line("ready")
    res = lab.peer("pc", "udp-ping", dst, str(port), "30", str(sport)).result()
    return res, echo.result()["peers"]


def tcp_4mb_through(lab: NetLab, dst: str, port: int) -> tuple[dict, dict]:
    sink = lab.peer("ls", "tcp-sink", str(port))
    sink.wait_line("ready")
    sent = lab.peer("pc", "tcp-send", dst, str(port), str(4 * MB)).result(timeout=120)
    return sent, sink.result(timeout=120)


def echo_requests_sent_to_ls(d: Passnat) -> list[bytes]:
    """ICMP echo requests the router sent to the LAN server (its --capture)."""
    return [data for data, meta in RawPcapNgReader(d.capture)
            if meta.ifname == b"lan0" and data[9] == 1 and data[20] == 8 and data[16:20] == bytes(map(int, LS.split(".")))]


def count(d: Passnat, name: str) -> int:
    """An engine counter, 0 while it was never counted."""
    try:
        return d.counter(name)
    except KeyError:
        return 0


def ip_of(data: bytes, off: int) -> str:
    return ".".join(str(b) for b in data[off:off + 4])


# ---------------------------------------------------------------- with reflection


def test_snapt_global_reached_from_the_lan(lab: NetLab, tmp_path: Path, daemon: list[Passnat]) -> None:
    d = start(lab, tmp_path, daemon, HEAD + SNAPT + REFLECT)
    mapping = external_mapping(lab, 41000)  # what the world sees for PC:41000
    res, peers = udp_through(lab, ROUTER_WAN, 7000, 41000)
    assert res["received"] >= 29, res  # the replies reach the PC
    assert peers == [mapping], (peers, mapping)  # the LAN server sees the PC's external mapping
    assert mapping.startswith(f"{ROUTER_WAN}:")
    # TCP: 4 MB intact, the server sees the PC's mapping (the session's global port)
    sent, got = tcp_4mb_through(lab, ROUTER_WAN, 7000)
    assert got["bytes"] == sent["bytes"] == 4 * MB and got["sha256"] == sent["sha256"]
    assert got["peer"] == ROUTER_WAN
    sessions = [s for s in d.sessions() if s["protocol"] == "tcp" and s["inside"] == PC
                and s["inside_port"] == sent["local_port"]]
    assert [s["outside_port"] for s in sessions] == [got["peer_port"]], sessions
    assert sessions[0]["reflect"] is True and sessions[0]["remote"] == ROUTER_WAN
    # ICMP echo to the global address goes to the LAN server (SNAPT protocol icmp)
    before = count(d, "local_echo_replies")
    assert ping(lab, "pc", ROUTER_WAN, 3) == 3
    assert count(d, "local_echo_replies") == before  # answered by ls, not by the router
    requests = echo_requests_sent_to_ls(d)
    assert requests and {ip_of(r, 12) for r in requests} == {ROUTER_WAN}  # from the PC's mapping
    text = format_status_nat(d.ask("status_nat"))
    assert re.search(rf":snapt lan1 +tcp +{re.escape(LS)}:7000 += +{re.escape(ROUTER_WAN)}:7000 +<-> +"
                     rf"{re.escape(ROUTER_WAN)}:{got['peer_port']} ", text), text
    assert "reflect: hairpin, inside to inside through 203.0.113.1 (nat reflect)" in text
    assert count(d, "reflected_packets") > 4000
    assert count(d, "internal_error") == 0


def test_static_nat_address_reached_from_the_lan(lab: NetLab, tmp_path: Path, daemon: list[Passnat]) -> None:
    d = start(lab, tmp_path, daemon, HEAD + f"nat static add {LS} {STATIC_G} interface lan1\n" + REFLECT)
    mapping = external_mapping(lab, 41001)
    res, peers = udp_through(lab, STATIC_G, 7001, 41001)
    assert res["received"] >= 29, res
    assert peers == [mapping], (peers, mapping)
    sent, got = tcp_4mb_through(lab, STATIC_G, 7002)
    assert got["bytes"] == sent["bytes"] == 4 * MB and got["sha256"] == sent["sha256"]
    assert (got["peer"], got["peer_port"]) == (ROUTER_WAN, next(
        s["outside_port"] for s in d.sessions() if s["protocol"] == "tcp" and s["inside_port"] == sent["local_port"]))
    before = count(d, "local_echo_replies")
    assert ping(lab, "pc", STATIC_G, 3) == 3
    assert count(d, "local_echo_replies") == before
    requests = echo_requests_sent_to_ls(d)
    assert requests and {ip_of(r, 12) for r in requests} == {ROUTER_WAN}


def test_reflection_is_on_by_default(lab: NetLab, tmp_path: Path, daemon: list[Passnat]) -> None:
    start(lab, tmp_path, daemon, HEAD.replace("nat option reflect listed\n", "") + SNAPT)
    res, peers = udp_through(lab, ROUTER_WAN, 7000, 41002)
    assert res["received"] >= 29 and peers[0].startswith(f"{ROUTER_WAN}:"), (res, peers)


# ---------------------------------------------------------------- without reflection


def test_without_reflection_the_pc_gets_an_answer_at_once(lab: NetLab, tmp_path: Path,
                                                          daemon: list[Passnat]) -> None:
    d = start(lab, tmp_path, daemon, HEAD + SNAPT + f"nat static add 192.168.0.77 {STATIC_G} interface lan1\n")
    tcp = lab.peer("pc", "tcp-probe", ROUTER_WAN, "7000").result()
    assert tcp["ok"] is False and tcp["errno"] == "ECONNREFUSED" and tcp["seconds"] < 1.0, tcp
    udp = lab.peer("pc", "udp-probe", ROUTER_WAN, "7000").result()
    assert udp["result"] == "refused" and udp["seconds"] < 1.0, udp
    tcp = lab.peer("pc", "tcp-probe", STATIC_G, "80").result()
    assert tcp["errno"] == "ECONNREFUSED" and tcp["seconds"] < 1.0, tcp
    assert ping(lab, "pc", STATIC_G, 2) == 2  # the router's own address now: it answers the ping
    assert count(d, "tcp_rst_sent") >= 2 and count(d, "icmp_sent_type3_code3") >= 1
    assert count(d, "reflected_packets") == 0
    # the WAN side stays silent by default
    res = lab.peer("srv", "tcp-probe", ROUTER_WAN, "2222").result()
    assert res["ok"] is False and res["seconds"] >= 9.5, res  # no answer: the connect timed out
