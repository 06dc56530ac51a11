"""ICMP errors about translated flows (R7, RFC 5508), and the router's own ICMP (R1)."""
from __future__ import annotations

from scapy.all import ICMP, IP, TCP, UDP, raw
from scapy.layers.inet import ICMPerror, IPerror, TCPerror, UDPerror

from tests.nat.helpers import GW, PC1, PC2, SRV, WAN_ADDR, counters, icmp_error, make_router, one, ping, tcp, udp


def _out(r, pkt):  # noqa: ANN001, ANN202
    return bytes(one(r.handle("lan0", pkt, 0.0)))


def test_port_unreachable_about_udp_reaches_inside_host() -> None:
    r = make_router()
    r.handle("lan0", udp(PC2, SRV, 5000, 9), 0.0)  # PC2 takes 5000 outside
    sent = _out(r, udp(PC1, SRV, 5000, 9, b"payload!"))
    oport = IP(sent)[UDP].sport
    assert oport != 5000
    err = one(r.handle("lan1", icmp_error(SRV, WAN_ADDR, sent, 3, 3), 1.0), "lan0")
    assert err.dst == PC1 and err[ICMP].type == 3 and err[ICMP].code == 3
    assert (err[IPerror].src, err[IPerror].dst) == (PC1, SRV)
    assert (err[UDPerror].sport, err[UDPerror].dport) == (5000, 9)


def test_fragmentation_needed_about_tcp_reaches_inside_host_with_mtu() -> None:
    r = make_router()
    r.handle("lan0", tcp(PC2, SRV, 40000, 443, "S"), 0.0)
    sent = _out(r, tcp(PC1, SRV, 40000, 443, "S"))
    err = one(r.handle("lan1", icmp_error("198.51.100.254", WAN_ADDR, sent, 3, 4, mtu=1400), 1.0), "lan0")
    assert err.dst == PC1 and err[ICMP].nexthopmtu == 1400
    assert err[IPerror].src == PC1 and err[TCPerror].sport == 40000


def test_quoted_transport_checksum_is_reverted() -> None:
    """RFC 5508: with the whole datagram quoted, the inside host sees its own packet."""
    r = make_router()
    r.handle("lan0", udp(PC2, SRV, 5000, 9), 0.0)
    original = udp(PC1, SRV, 5000, 9, b"0123456789")
    sent = _out(r, original)
    whole = raw(IP(src=SRV, dst=WAN_ADDR) / ICMP(type=3, code=3) / sent)
    err = one(r.handle("lan1", whole, 1.0))
    quoted = IP(original)
    assert err[UDPerror].chksum == quoted[UDP].chksum
    assert err[UDPerror].sport == 5000


def test_time_exceeded_for_traceroute_and_udp_checksum_zero_in_quote() -> None:
    r = make_router()
    pkt = bytearray(udp(PC1, SRV, 33434, 33434, b"trace"))
    pkt[26:28] = b"\x00\x00"
    sent = _out(r, bytes(pkt))
    err = one(r.handle("lan1", icmp_error("198.51.100.1", WAN_ADDR, sent, 11, 0), 1.0))
    assert err.dst == PC1 and err[ICMP].type == 11 and err[UDPerror].chksum == 0


def test_icmp_error_about_echo_request() -> None:
    r = make_router()
    r.handle("lan0", ping(PC2, SRV, 5), 0.0)
    sent = _out(r, ping(PC1, SRV, 5))
    oid = IP(sent)[ICMP].id
    assert oid != 5
    err = one(r.handle("lan1", icmp_error("198.51.100.1", WAN_ADDR, sent, 11, 0), 1.0))
    assert err.dst == PC1 and err[ICMPerror].id == 5


def test_icmp_error_without_session_is_dropped() -> None:
    r = make_router()
    quote = udp(WAN_ADDR, SRV, 12345, 9)
    assert r.handle("lan1", icmp_error(SRV, WAN_ADDR, quote), 0.0) == []
    assert counters(r)["icmp_error_no_session"] == 1


def test_icmp_error_with_bad_quoted_header_is_dropped() -> None:
    r = make_router()
    sent = bytearray(_out(r, udp(PC1, SRV, 5000, 9)))
    sent[10] ^= 0xFF  # corrupt the quoted header's checksum
    assert r.handle("lan1", icmp_error(SRV, WAN_ADDR, bytes(sent)), 1.0) == []
    assert counters(r)["icmp_error_malformed"] == 1


def test_icmp_error_does_not_refresh_the_session() -> None:
    r = make_router("nat timeout protocol udp 30\n")
    sent = _out(r, udp(PC1, SRV, 5000, 9))
    r.handle("lan1", icmp_error(SRV, WAN_ADDR, sent), 20.0)
    r.on_timer(31.0)
    assert r.sessions(31.0) == []


def test_inside_host_error_about_inbound_packet_is_translated() -> None:
    r = make_router()
    sent = _out(r, udp(PC1, SRV, 5000, 9))
    delivered = bytes(one(r.handle("lan1", udp(SRV, WAN_ADDR, 9, IP(sent)[UDP].sport), 0.1)))
    err = one(r.handle("lan0", icmp_error(PC1, SRV, delivered, 3, 3), 0.2), "lan1")
    assert err.src == WAN_ADDR and err[IPerror].dst == WAN_ADDR and err[UDPerror].dport == IP(sent)[UDP].sport


def test_router_answers_ping_on_both_interfaces() -> None:
    r = make_router()
    rep = one(r.handle("lan0", ping(PC1, "192.168.0.1", 3, 7), 0.0), "lan0")
    assert (rep.src, rep.dst, rep[ICMP].type, rep[ICMP].id, rep[ICMP].seq) == ("192.168.0.1", PC1, 0, 3, 7)
    rep = one(r.handle("lan1", ping(SRV, WAN_ADDR, 3), 0.0), "lan1")
    assert rep.src == WAN_ADDR and rep.dst == SRV
    rep = one(r.handle("lan0", ping(PC1, WAN_ADDR, 4), 0.0), "lan0")
    assert rep.src == WAN_ADDR and rep.dst == PC1


def test_ttl_exceeded_is_sent_by_the_router() -> None:
    r = make_router()
    err = one(r.handle("lan0", udp(PC1, SRV, 5000, 33434, ttl=1), 0.0), "lan0")
    assert (err.src, err.dst, err[ICMP].type) == ("192.168.0.1", PC1, 11)
    assert err[IPerror].src == PC1  # quotes the packet as the host sent it
    assert counters(r)["ttl_exceeded"] == 1
    assert r.sessions(0.0) == []  # no session for a packet that was dropped


def test_no_route_sends_net_unreachable() -> None:
    r = make_router(base="interface lan0 add 192.168.0.1/24\ninterface lan1 add 203.0.113.1/24\n")
    err = one(r.handle("lan0", udp(PC1, SRV, 5000, 53), 0.0), "lan0")
    assert err[ICMP].type == 3 and err[ICMP].code == 0
    assert counters(r)["no_route"] == 1


def test_no_icmp_error_about_an_icmp_error() -> None:
    r = make_router()
    quote = udp(PC1, "10.0.0.1", 1, 2)
    bad = icmp_error(PC1, SRV, quote)
    b = bytearray(bad)
    b[8] = 1  # TTL 1
    b[10:12] = b"\x00\x00"
    pkt = IP(bytes(b))
    pkt.chksum = None
    assert r.handle("lan0", raw(pkt), 0.0) == []


def test_wan_gateway_next_hop() -> None:
    r = make_router()
    out = r.handle("lan0", tcp(PC1, SRV, 1, 2, "S"), 0.0)
    assert out[0].next_hop == GW
    assert IP(out[0].packet)[TCP].sport == 1
