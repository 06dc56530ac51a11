"""Sessions survive a restart (R19, B2): export, JSON, import into a new router."""
from __future__ import annotations

import json

from scapy.all import IP, TCP, UDP, raw
from scapy.layers.pptp import PPTPOutgoingCallReply, PPTPOutgoingCallRequest

import passnat
from tests.nat.esp_sim import _esp
from tests.nat.helpers import BASE, PC1, PC2, SRV, WAN_ADDR, gre, gre_call_id, make_router, one, ping, tcp, udp

EXTRA = ("nat snapt add protocol tcp listen 8080 forward 192.168.0.10 80 interface lan1\n"
         "nat timeout protocol udp 300\n")
SERVER = "203.0.113.10"


def restart(r: passnat.Router, now: float, later: float, elapsed: float) -> passnat.Router:
    state = json.loads(json.dumps(r.export_state(now)))  # it must survive JSON
    new = make_router(EXTRA)
    new.import_state(state, later, elapsed=elapsed)
    return new


def test_sessions_of_every_kind_survive_a_restart() -> None:
    r = make_router(EXTRA)
    # UDP with a port collision (PC2 got a remapped port), TCP established, ICMP, SNAPT
    one(r.handle("lan0", udp(PC1, SRV, 5000, 9000), 0.0))
    b = one(r.handle("lan0", udp(PC2, SRV, 5000, 9000), 0.0))
    one(r.handle("lan0", tcp(PC1, SRV, 40000, 443, "S"), 0.0))
    one(r.handle("lan1", tcp(SRV, WAN_ADDR, 443, 40000, "SA"), 0.0))
    one(r.handle("lan0", ping(PC1, SRV, 33), 0.0))
    one(r.handle("lan1", tcp(SRV, WAN_ADDR, 777, 8080, "S"), 0.0))
    # ESP from two hosts to one server, paired
    one(r.handle("lan0", _esp(PC1, SERVER, 0x11, 1, b"a"), 0.0))
    one(r.handle("lan1", _esp(SERVER, WAN_ADDR, 0x12, 1, b"a"), 0.0))
    one(r.handle("lan0", _esp(PC2, SERVER, 0x21, 1, b"b"), 0.0))
    one(r.handle("lan1", _esp(SERVER, WAN_ADDR, 0x22, 1, b"b"), 0.0))
    # a PPTP call
    c = [raw(IP(src=PC1, dst=SERVER) / TCP(sport=41000, dport=1723, flags="S", seq=0)),
         raw(IP(src=SERVER, dst=WAN_ADDR) / TCP(sport=1723, dport=41000, flags="SA", seq=0, ack=1))]
    one(r.handle("lan0", c[0], 0.0))
    one(r.handle("lan1", c[1], 0.0))
    ocrq = raw(IP(src=PC1, dst=SERVER) / TCP(sport=41000, dport=1723, flags="PA", seq=1, ack=1) /
               raw(PPTPOutgoingCallRequest(call_id=0x1234)))
    one(r.handle("lan0", ocrq, 0.0))
    ocrp = raw(IP(src=SERVER, dst=WAN_ADDR) / TCP(sport=1723, dport=41000, flags="PA", seq=1, ack=169) /
               raw(PPTPOutgoingCallReply(call_id=0x80, peer_call_id=0x1234, result_code=1)))
    one(r.handle("lan1", ocrp, 0.0))
    one(r.handle("lan1", gre(SERVER, WAN_ADDR, 0x1234), 0.0))
    before = {(s["protocol"], s["inside"], s["inside_port"], s["outside_port"]) for s in r.sessions(100.0)}

    r2 = restart(r, 100.0, later=5000.0, elapsed=60.0)
    after = {(s["protocol"], s["inside"], s["inside_port"], s["outside_port"]) for s in r2.sessions(5000.0)}
    assert after == before
    # timers: idle 100 s before the stop + 60 s down
    udp_left = sorted(s["remaining"] for s in r2.sessions(5000.0) if s["protocol"] == "udp")
    assert udp_left == [140.0, 140.0]
    # inbound traffic reaches the same hosts, on the same outside ports
    assert one(r2.handle("lan1", udp(SRV, WAN_ADDR, 9000, b[UDP].sport), 5001.0)).dst == PC2
    assert one(r2.handle("lan1", udp(SRV, WAN_ADDR, 9000, 5000), 5001.0)).dst == PC1
    assert one(r2.handle("lan1", tcp(SRV, WAN_ADDR, 443, 40000, "A", b"data"), 5001.0)).dst == PC1
    assert one(r2.handle("lan1", ping(SRV, WAN_ADDR, 33, reply=True), 5001.0)).dst == PC1
    assert one(r2.handle("lan0", tcp("192.168.0.10", SRV, 80, 777, "SA"), 5001.0))[TCP].sport == 8080
    assert one(r2.handle("lan1", _esp(SERVER, WAN_ADDR, 0x22, 2, b"b"), 5001.0)).dst == PC2
    assert one(r2.handle("lan1", _esp(SERVER, WAN_ADDR, 0x12, 2, b"a"), 5001.0)).dst == PC1
    g = r2.handle("lan1", gre(SERVER, WAN_ADDR, 0x1234), 5001.0)
    assert IP(g[0].packet).dst == PC1 and gre_call_id(g[0].packet) == 0x1234
    # new sessions do not reuse restored ids or ports
    n = one(r2.handle("lan0", udp("192.168.0.13", SRV, 5000, 9000), 5002.0))
    assert n[UDP].sport not in (5000, b[UDP].sport)
    ids = [s["id"] for s in r2.sessions(5002.0)]
    assert len(ids) == len(set(ids))


def test_sessions_whose_timer_ran_out_during_the_restart_are_not_restored() -> None:
    r = make_router(EXTRA)
    one(r.handle("lan0", udp(PC1, SRV, 5000, 9000), 0.0))  # 300 s timer
    one(r.handle("lan0", tcp(PC1, SRV, 40000, 443, "S"), 0.0))  # 900 s (tcp-synonly default)
    r2 = restart(r, 200.0, later=0.0, elapsed=150.0)
    assert [s["protocol"] for s in r2.sessions(0.0)] == ["tcp"]
    assert r2.counters()["state_sessions_expired_or_invalid"] == 1


def test_import_into_a_config_without_that_nat_interface_skips_sessions() -> None:
    r = make_router()
    one(r.handle("lan0", udp(PC1, SRV, 5000, 9000), 0.0))
    new = passnat.Router(passnat.parse_config(BASE.replace("nat napt add private 192.168.0.0-192.168.0.255 "
                                                           "interface lan1\n", "")))
    assert new.import_state(r.export_state(1.0), 1.0) == 0
