"""NAPT (R4): TCP, UDP and ICMP out and back, EIM, port collisions, unsolicited drops."""
from __future__ import annotations

from scapy.all import ICMP, IP, TCP, UDP

from tests.nat.helpers import GW, PC1, PC2, SRV, WAN_ADDR, counters, make_router, one, ping, tcp, udp


def test_tcp_out_and_back_keeps_port_and_checksums() -> None:
    r = make_router()
    out = one(r.handle("lan0", tcp(PC1, SRV, 40000, 80, "S"), 0.0), "lan1")
    assert (out.src, out[TCP].sport, out.dst, out[TCP].dport, out.ttl) == (WAN_ADDR, 40000, SRV, 80, 63)
    back = one(r.handle("lan1", tcp(SRV, WAN_ADDR, 80, 40000, "SA"), 0.1), "lan0")
    assert (back.src, back.dst, back[TCP].dport) == (SRV, PC1, 40000)
    # established: the fast path
    data = one(r.handle("lan0", tcp(PC1, SRV, 40000, 80, "PA", b"GET / HTTP/1.0\r\n\r\n"), 0.2))
    assert data[TCP].sport == 40000 and bytes(data[TCP].payload).startswith(b"GET")
    reply = one(r.handle("lan1", tcp(SRV, WAN_ADDR, 80, 40000, "PA", b"HTTP/1.0 200 OK"), 0.3))
    assert reply.dst == PC1 and reply.ttl == 63


def test_next_hop_is_gateway_outside_and_host_inside() -> None:
    r = make_router()
    out = r.handle("lan0", udp(PC1, SRV, 5000, 53), 0.0)
    assert out[0].next_hop == GW and out[0].interface == "lan1"
    back = r.handle("lan1", udp(SRV, WAN_ADDR, 53, 5000), 0.1)
    assert back[0].next_hop == PC1 and back[0].interface == "lan0"
    assert isinstance(back[0].packet, bytes)


def test_udp_out_and_back() -> None:
    r = make_router()
    out = one(r.handle("lan0", udp(PC1, SRV, 5000, 9000, b"hello"), 0.0), "lan1")
    assert (out.src, out[UDP].sport) == (WAN_ADDR, 5000)
    back = one(r.handle("lan1", udp(SRV, WAN_ADDR, 9000, 5000, b"world"), 0.1), "lan0")
    assert (back.dst, back[UDP].dport, bytes(back[UDP].payload)) == (PC1, 5000, b"world")


def test_udp_checksum_zero_stays_zero() -> None:
    r = make_router()
    pkt = bytearray(udp(PC1, SRV, 5000, 9000, b"abc"))
    pkt[26:28] = b"\x00\x00"
    out = r.handle("lan0", bytes(pkt), 0.0)
    assert IP(out[0].packet)[UDP].chksum == 0
    back = bytearray(udp(SRV, WAN_ADDR, 9000, 5000, b"abc"))
    back[26:28] = b"\x00\x00"
    out = r.handle("lan1", bytes(back), 0.1)
    assert IP(out[0].packet)[UDP].chksum == 0
    # again on the fast path (session established)
    out = r.handle("lan0", bytes(pkt), 0.2)
    assert IP(out[0].packet)[UDP].chksum == 0


def test_icmp_echo_id_translation() -> None:
    r = make_router()
    out = one(r.handle("lan0", ping(PC1, SRV, 77), 0.0), "lan1")
    assert out.src == WAN_ADDR and out[ICMP].id == 77
    back = one(r.handle("lan1", ping(WAN_ADDR and SRV, WAN_ADDR, 77, reply=True), 0.1), "lan0")
    assert back.dst == PC1 and back[ICMP].id == 77 and back[ICMP].type == 0


def test_same_source_port_from_two_hosts_gets_two_outside_ports() -> None:
    r = make_router()
    a = one(r.handle("lan0", udp(PC1, SRV, 5000, 53), 0.0))
    b = one(r.handle("lan0", udp(PC2, SRV, 5000, 53), 0.0))
    assert a[UDP].sport == 5000
    assert b[UDP].sport != 5000 and b[UDP].sport >= 1024
    back_a = one(r.handle("lan1", udp(SRV, WAN_ADDR, 53, a[UDP].sport), 0.1))
    back_b = one(r.handle("lan1", udp(SRV, WAN_ADDR, 53, b[UDP].sport), 0.1))
    assert (back_a.dst, back_a[UDP].dport) == (PC1, 5000)
    assert (back_b.dst, back_b[UDP].dport) == (PC2, 5000)


def test_same_icmp_id_from_two_hosts() -> None:
    r = make_router()
    a = one(r.handle("lan0", ping(PC1, SRV, 1), 0.0))
    b = one(r.handle("lan0", ping(PC2, SRV, 1), 0.0))
    assert a[ICMP].id != b[ICMP].id
    assert one(r.handle("lan1", ping(SRV, WAN_ADDR, b[ICMP].id, reply=True), 0.1)).dst == PC2
    assert one(r.handle("lan1", ping(SRV, WAN_ADDR, a[ICMP].id, reply=True), 0.1)).dst == PC1


def test_low_port_collision_stays_below_1024() -> None:
    r = make_router()
    one(r.handle("lan0", udp(PC1, SRV, 500, 500), 0.0))
    b = one(r.handle("lan0", udp(PC2, SRV, 500, 500), 0.0))
    assert 0 < b[UDP].sport < 1024 and b[UDP].sport != 500


def test_endpoint_independent_mapping() -> None:
    r = make_router()
    one(r.handle("lan0", udp(PC2, SRV, 6000, 1), 0.0))  # takes 6000 for PC2
    a = one(r.handle("lan0", udp(PC1, SRV, 6000, 1), 0.0))
    b = one(r.handle("lan0", udp(PC1, "198.51.100.99", 6000, 2), 0.0))
    c = one(r.handle("lan0", tcp(PC1, "198.51.100.99", 6000, 2, "S"), 0.0))
    assert a[UDP].sport == b[UDP].sport != 6000
    assert c[TCP].sport == 6000  # TCP ports are a separate space


def test_unsolicited_inbound_is_dropped_and_counted() -> None:
    r = make_router()
    assert r.handle("lan1", udp(SRV, WAN_ADDR, 53, 5000), 0.0) == []
    assert r.handle("lan1", tcp(SRV, WAN_ADDR, 1234, 22, "S"), 0.0) == []
    assert counters(r)["no_session"] == 2
    # a reply from another remote endpoint than the session's is not let in either
    one(r.handle("lan0", udp(PC1, SRV, 5000, 53), 0.0))
    assert r.handle("lan1", udp("198.51.100.8", WAN_ADDR, 53, 5000), 0.0) == []
    assert counters(r)["no_session"] == 3


def test_random_port_assignment_still_keeps_ike_ports() -> None:
    r = make_router("nat option port-assignment random\n")
    ports = {one(r.handle("lan0", udp(PC1, SRV, 40000 + i, 80), 0.0))[UDP].sport for i in range(20)}
    assert len(ports) == 20 and ports != set(range(40000, 40020))
    assert all(p >= 1024 for p in ports)
    ike = one(r.handle("lan0", udp(PC2, SRV, 500, 500), 0.0))
    nat_t = one(r.handle("lan0", udp(PC2, SRV, 4500, 4500), 0.0))
    assert (ike[UDP].sport, nat_t[UDP].sport) == (500, 4500)


def test_ike_ports_kept_when_free() -> None:
    r = make_router()
    assert one(r.handle("lan0", udp(PC1, SRV, 500, 500), 0.0))[UDP].sport == 500
    assert one(r.handle("lan0", udp(PC1, SRV, 4500, 4500), 0.0))[UDP].sport == 4500


def test_source_outside_every_nat_range_is_routed_untranslated() -> None:
    r = make_router("interface lan2 add 10.9.0.1/24\n")
    out = one(r.handle("lan2", udp("10.9.0.5", SRV, 5000, 53), 0.0), "lan1")
    assert out.src == "10.9.0.5"


def test_tcp_without_session_from_inside_is_picked_up() -> None:
    r = make_router()
    out = one(r.handle("lan0", tcp(PC1, SRV, 41000, 443, "A"), 0.0))
    assert out.src == WAN_ADDR
    [s] = [s for s in r.sessions(0.0) if s["protocol"] == "tcp"]
    assert s["state"] == "established"


def test_session_records() -> None:
    r = make_router()
    one(r.handle("lan0", tcp(PC1, SRV, 40000, 80, "S"), 0.0))
    [s] = r.sessions(10.0)
    assert s["type"] == "napt" and s["interface"] == "lan1" and s["protocol"] == "tcp"
    assert (s["inside"], s["inside_port"], s["outside"], s["outside_port"]) == (PC1, 40000, WAN_ADDR, 40000)
    assert (s["remote"], s["remote_port"]) == (SRV, 80)
    assert s["remaining"] == 890.0
    assert isinstance(s["id"], int)
    assert r.clear_sessions(s["id"]) == 1 and r.sessions(10.0) == []
    assert r.handle("lan1", tcp(SRV, WAN_ADDR, 80, 40000, "SA"), 11.0) == []


def test_session_records_without_now_and_as_attributes() -> None:
    r = make_router()
    one(r.handle("lan0", udp(PC1, SRV, 5000, 53), 100.0))
    one(r.handle("lan0", ping(PC2, SRV, 7), 104.0))
    recs = {rec.protocol: rec for rec in r.sessions()}
    assert recs["udp"].remaining == 11.0 and recs["icmp"].remaining == 900.0  # counted from 104
    assert recs["udp"]["private"] == PC1 and recs["udp"]["global_port"] == 5000
    assert r.sessions(110.0)[0]["remaining"] == 5.0
