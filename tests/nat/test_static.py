"""SNAPT (R5), static NAT and dynamic NAT (R6), and the priority between them (R2)."""
from __future__ import annotations

from scapy.all import GRE, ICMP, IP, TCP, UDP, raw

from tests.nat.helpers import PC1, PC2, SRV, WAN_ADDR, counters, make_router, one, ping, tcp, udp

SERVER = "192.168.0.10"


def test_snapt_port_range_maps_onto_range() -> None:
    r = make_router(f"nat snapt add protocol tcp listen 8080-8089 forward {SERVER} 80-89 interface lan1\n")
    out = one(r.handle("lan1", tcp(SRV, WAN_ADDR, 33000, 8083, "S"), 0.0), "lan0")
    assert (out.dst, out[TCP].dport) == (SERVER, 83)
    back = one(r.handle("lan0", tcp(SERVER, SRV, 83, 33000, "SA"), 0.1), "lan1")
    assert (back.src, back[TCP].sport) == (WAN_ADDR, 8083)
    [s] = r.sessions(0.1)
    assert s["type"] == "snapt" and (s["inside_port"], s["outside_port"]) == (83, 8083)
    assert r.handle("lan1", tcp(SRV, WAN_ADDR, 33000, 8090, "S"), 0.2) == []


def test_snapt_tcpudp_and_disabled_rule() -> None:
    r = make_router(f"nat snapt add protocol tcpudp listen 53 forward {SERVER} 53 interface lan1\n"
                    f"nat snapt add protocol tcp listen 22 forward {SERVER} 22 disable interface lan1\n")
    assert one(r.handle("lan1", udp(SRV, WAN_ADDR, 4000, 53), 0.0)).dst == SERVER
    assert one(r.handle("lan1", tcp(SRV, WAN_ADDR, 4000, 53, "S"), 0.0)).dst == SERVER
    assert r.handle("lan1", tcp(SRV, WAN_ADDR, 4000, 22, "S"), 0.0) == []


def test_snapt_protocol_forward_esp_and_gre() -> None:
    r = make_router(f"nat snapt add protocol 50 forward {SERVER} interface lan1\n"
                    f"nat snapt add protocol gre forward {SERVER} interface lan1\n")
    esp = raw(IP(src=SRV, dst=WAN_ADDR, proto=50) / (b"\x00\x00\x10\x01" + b"\x00\x00\x00\x01" + b"z" * 20))
    assert one(r.handle("lan1", esp, 0.0), "lan0").dst == SERVER
    g = raw(IP(src=SRV, dst=WAN_ADDR) / GRE() / b"data")
    assert one(r.handle("lan1", g, 0.0), "lan0").dst == SERVER
    # the server's replies leave with the global address
    reply = raw(IP(src=SERVER, dst=SRV, proto=50) / (b"\x00\x00\x20\x01" + b"\x00\x00\x00\x01" + b"y" * 20))
    assert one(r.handle("lan0", reply, 0.1), "lan1").src == WAN_ADDR


def test_snapt_default_is_last_and_other_rules_win() -> None:
    r = make_router(f"nat snapt add default {PC2} interface lan1\n"
                    f"nat snapt add protocol tcp listen 80 forward {SERVER} 80 interface lan1\n")
    assert one(r.handle("lan1", tcp(SRV, WAN_ADDR, 4000, 80, "S"), 0.0)).dst == SERVER
    assert one(r.handle("lan1", tcp(SRV, WAN_ADDR, 4000, 443, "S"), 0.0)).dst == PC2
    assert one(r.handle("lan1", udp(SRV, WAN_ADDR, 4000, 9999), 0.0)).dst == PC2


def test_napt_never_hands_out_a_snapt_listen_port() -> None:
    r = make_router(f"nat snapt add protocol tcp listen 8080 forward {SERVER} 80 interface lan1\n")
    out = one(r.handle("lan0", tcp(PC1, SRV, 8080, 80, "S"), 0.0))
    assert out[TCP].sport != 8080


def test_static_nat_both_directions_any_protocol() -> None:
    r = make_router("interface lan1 add 203.0.113.50/24\nnat static add 192.168.0.20 203.0.113.50 interface lan1\n")
    out = one(r.handle("lan0", tcp("192.168.0.20", SRV, 5555, 80, "S"), 0.0))
    assert (out.src, out[TCP].sport) == ("203.0.113.50", 5555)  # ports never change
    inbound = one(r.handle("lan1", tcp(SRV, "203.0.113.50", 4000, 22, "S"), 0.0), "lan0")
    assert (inbound.dst, inbound[TCP].dport) == ("192.168.0.20", 22)
    esp = raw(IP(src=SRV, dst="203.0.113.50", proto=50) / (b"\x00\x00\x10\x01\x00\x00\x00\x01" + b"q" * 16))
    assert one(r.handle("lan1", esp, 0.0)).dst == "192.168.0.20"
    assert one(r.handle("lan1", ping(SRV, "203.0.113.50", 9), 0.0)).dst == "192.168.0.20"


def test_static_beats_napt_for_its_host() -> None:
    r = make_router("nat static add 192.168.0.20 203.0.113.60 interface lan1\n")
    assert one(r.handle("lan0", udp("192.168.0.20", SRV, 1, 2), 0.0)).src == "203.0.113.60"
    assert one(r.handle("lan0", udp(PC1, SRV, 1, 2), 0.0)).src == WAN_ADDR
    assert "203.0.113.60" in r.owned_addresses()["lan1"]


def test_dynamic_nat_pool() -> None:
    r = make_router("nat dynamic add private 192.168.0.100-192.168.0.102 interface lan1\n"
                    "nat dynamic add global 203.0.113.70-203.0.113.71 interface lan1\n"
                    "nat timeout dynamic 60\n",
                    base="interface lan0 add 192.168.0.1/24\ninterface lan1 add 203.0.113.1/24\n"
                         "route add default 203.0.113.254\n")
    a = one(r.handle("lan0", udp("192.168.0.100", SRV, 1000, 53), 0.0))
    b = one(r.handle("lan0", tcp("192.168.0.101", SRV, 1000, 80, "S"), 0.0))
    assert {a.src, b.src} == {"203.0.113.70", "203.0.113.71"}
    assert a[UDP].sport == 1000
    # the pool is empty for a third host (and it is in no NAPT range)
    assert r.handle("lan0", udp("192.168.0.102", SRV, 1000, 53), 0.0) == []
    assert counters(r)["nat_dynamic_pool_exhausted"] == 1
    # inbound to a bound global reaches its host, any protocol
    back = one(r.handle("lan1", raw(IP(src=SRV, dst=a.src) / ICMP(type=8, id=3)), 1.0), "lan0")
    assert back.dst == "192.168.0.100"
    recs = [s for s in r.sessions(1.0) if s["type"] == "dynamic"]
    assert len(recs) == 2
    # after the dynamic timer the binding goes and the pool has room again
    r.on_timer(200.0)
    assert one(r.handle("lan0", udp("192.168.0.102", SRV, 1000, 53), 200.0)).src.startswith("203.0.113.7")


def test_icmp_error_through_static_nat_rewrites_the_quote() -> None:
    r = make_router("nat static add 192.168.0.20 203.0.113.60 interface lan1\n")
    sent = one(r.handle("lan0", udp("192.168.0.20", SRV, 7000, 7001), 0.0))
    from tests.nat.helpers import icmp_error
    err = one(r.handle("lan1", icmp_error(SRV, "203.0.113.60", bytes(sent)), 0.1), "lan0")
    assert err.dst == "192.168.0.20"
    from scapy.layers.inet import IPerror, UDPerror
    assert err[IPerror].src == "192.168.0.20" and err[UDPerror].sport == 7000
