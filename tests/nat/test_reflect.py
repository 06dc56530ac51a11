"""Hairpinning (R26; RFC 4787 REQ-9, RFC 5382 REQ-8, RFC 5508 REQ-7; SEIL ``nat reflect``).

An inside host reaches an inside server through a global address: the packet
is translated as if it left through the NAT interface (its source becomes the
sender's own external mapping) and came back in (its destination becomes the
owner of the address/port).  Every packet is checked with scapy (checksums).
"""
from __future__ import annotations

from itertools import permutations

import pytest
from scapy.all import ICMP, IP, TCP, UDP, raw
from scapy.layers.inet import IPerror, UDPerror
from scapy.layers.l2 import GRE_PPTP
from scapy.layers.pptp import (
    PPTP,
    PPTPOutgoingCallReply,
    PPTPOutgoingCallRequest,
    PPTPStartControlConnectionReply,
    PPTPStartControlConnectionRequest,
)

import passnat
from passnat.control.format import format_status_nat
from passnat.nat.flow import H_SLOW
from passnat.nat.table import flow_key
from passnat.packet.ipv4 import aton
from tests.nat.esp_sim import _esp
from tests.nat.fragment_helpers import reassemble, split
from tests.nat.helpers import (
    BASE,
    PC1,
    PC2,
    PC3,
    SRV,
    WAN_ADDR,
    counters,
    gre,
    icmp_error,
    make_router,
    one,
    ping,
    tcp,
    udp,
    verify,
)

PEER = "192.168.0.14"  # another inside host (NAPT only)
STATIC_G = "203.0.113.5"  # PC3's static global address
RULES = f"""\
nat snapt add protocol tcpudp listen 7000 forward {PC2} 7000 interface lan1
nat snapt add protocol tcp listen 1723 forward {PC2} 1723 interface lan1
nat static add {PC3} {STATIC_G} interface lan1
"""


def router(extra: str = "") -> passnat.Router:
    return make_router(RULES + extra)


def hop(r: passnat.Router, iface: str, packet: bytes, now: float) -> IP:
    """One packet through the router: exactly one output, back out on lan0."""
    return one(r.handle(iface, packet, now), "lan0")


# ------------------------------------------------------------ SNAPT, UDP / TCP


def test_udp_to_a_port_forward_reaches_the_server_from_the_senders_own_mapping() -> None:
    r = router()
    # PC3 holds global port 40000 already: PC1's mapping of 40000 is 40001 (REQ-9b: that is what
    # the server must see, the address and port the outside world sees for PC1)
    assert one(r.handle("lan0", udp(PEER, SRV, 40000, 53), 0.0)).sport == 40000
    to_srv = one(r.handle("lan0", udp(PC1, SRV, 40000, 9), 0.0), "lan1")
    assert (to_srv.src, to_srv.sport) == (WAN_ADDR, 40001)
    got = hop(r, "lan0", udp(PC1, WAN_ADDR, 40000, 7000, b"hello"), 0.1)
    assert (got.src, got.sport, got.dst, got.dport) == (WAN_ADDR, 40001, PC2, 7000)
    assert bytes(got[UDP].payload) == b"hello" and got.ttl == 63
    back = hop(r, "lan0", udp(PC2, WAN_ADDR, 7000, 40001, b"world"), 0.2)
    assert (back.src, back.sport, back.dst, back.dport) == (WAN_ADDR, 7000, PC1, 40000)
    assert bytes(back[UDP].payload) == b"world"
    # PC1's mapping is one mapping: the outside server still gets the same port (REQ-1)
    assert one(r.handle("lan0", udp(PC1, SRV, 40000, 10), 0.3), "lan1").sport == 40001
    assert counters(r)["reflected_packets"] == 2


def test_tcp_connection_through_a_port_forward_every_segment_translated_twice() -> None:
    r = router()
    syn = hop(r, "lan0", tcp(PC1, WAN_ADDR, 41000, 7000, "S"), 0.0)
    assert (syn.src, syn.sport, syn.dst, syn.dport) == (WAN_ADDR, 41000, PC2, 7000)
    synack = hop(r, "lan0", tcp(PC2, WAN_ADDR, 7000, 41000, "SA"), 0.01)
    assert (synack.src, synack.sport, synack.dst, synack.dport) == (WAN_ADDR, 7000, PC1, 41000)
    # established segments: the flows of hairpinned sessions are slow, so the fast path (C or
    # Python) never sends them out the WAN with one translation only
    for i in range(5):
        data = hop(r, "lan0", tcp(PC1, WAN_ADDR, 41000, 7000, "PA", b"x" * 100), 0.02 + i)
        assert (data.src, data.dst, data.dport) == (WAN_ADDR, PC2, 7000)
        ack = hop(r, "lan0", tcp(PC2, WAN_ADDR, 7000, 41000, "A"), 0.03 + i)
        assert (ack.src, ack.sport, ack.dst, ack.dport) == (WAN_ADDR, 7000, PC1, 41000)
    sender = r.table.out_flows[6][flow_key(aton(PC1), aton(WAN_ADDR), 41000, 7000)]
    assert sender.o_hop[H_SLOW] is True and sender.i_hop[H_SLOW] is True
    states = {(s["type"], s["inside"]): s["state"] for s in r.sessions(6.0) if s["protocol"] == "tcp"}
    assert states == {("napt", PC1): "established", ("snapt", PC2): "established"}
    hop(r, "lan0", tcp(PC1, WAN_ADDR, 41000, 7000, "FA"), 7.0)
    hop(r, "lan0", tcp(PC2, WAN_ADDR, 7000, 41000, "FA"), 7.0)
    assert {s["state"] for s in r.sessions(7.0) if s["protocol"] == "tcp"} == {"closed"}


def test_the_same_for_a_static_nat_address_and_icmp_echo() -> None:
    r = router()
    got = hop(r, "lan0", udp(PC1, STATIC_G, 42000, 5353), 0.0)
    assert (got.src, got.sport, got.dst, got.dport) == (WAN_ADDR, 42000, PC3, 5353)
    back = hop(r, "lan0", udp(PC3, WAN_ADDR, 5353, 42000), 0.1)
    assert (back.src, back.sport, back.dst, back.dport) == (STATIC_G, 5353, PC1, 42000)
    syn = hop(r, "lan0", tcp(PC1, STATIC_G, 42001, 80, "S"), 0.2)
    assert (syn.src, syn.sport, syn.dst, syn.dport) == (WAN_ADDR, 42001, PC3, 80)
    synack = hop(r, "lan0", tcp(PC3, WAN_ADDR, 80, 42001, "SA"), 0.3)
    assert (synack.src, synack.sport, synack.dst, synack.dport) == (STATIC_G, 80, PC1, 42001)
    # ICMP echo (RFC 5508 REQ-7): the query id is PC1's mapping like a port
    req = hop(r, "lan0", ping(PC1, STATIC_G, 0x4242, seq=3), 0.4)
    assert (req.src, req.dst, req[ICMP].type, req[ICMP].id) == (WAN_ADDR, PC3, 8, 0x4242)
    rep = hop(r, "lan0", ping(PC3, WAN_ADDR, 0x4242, seq=3, reply=True), 0.5)
    assert (rep.src, rep.dst, rep[ICMP].type, rep[ICMP].id, rep[ICMP].seq) == (STATIC_G, PC1, 0, 0x4242, 3)


def test_a_ping_to_the_global_address_is_still_the_routers() -> None:
    r = router()
    rep = hop(r, "lan0", ping(PC1, WAN_ADDR, 9), 0.0)
    assert (rep.src, rep.dst, rep[ICMP].type) == (WAN_ADDR, PC1, 0)
    assert r.sessions(0.0) == [] and counters(r)["local_echo_replies"] == 1


def test_hairpin_to_another_inside_hosts_mapping_follows_its_filtering() -> None:
    """P2P (REQ-9 with address-and-port-dependent filtering): a mapping accepts only endpoints
    its host has sent to -- the sender's external mapping, for a hairpinned peer."""
    r = router()
    a = one(r.handle("lan0", udp(PC1, SRV, 50000, 3478), 0.0), "lan1")  # both learn their mapping
    b = one(r.handle("lan0", udp(PEER, SRV, 51000, 3478), 0.0), "lan1")
    peer = PEER
    # PC1 punches first: the peer's mapping has not sent to PC1's mapping -> dropped like from outside
    assert r.handle("lan0", udp(PC1, WAN_ADDR, 50000, b.sport), 0.1) == []
    assert counters(r)["no_session"] == 1 and "tcp_rst_sent" not in counters(r)
    # the peer punches: PC1's mapping has sent to the peer's mapping -> delivered from it
    got = hop(r, "lan0", udp(peer, WAN_ADDR, 51000, a.sport, b"punch"), 0.2)
    assert (got.src, got.sport, got.dst, got.dport) == (WAN_ADDR, b.sport, PC1, 50000)
    # and now PC1 gets through too
    got = hop(r, "lan0", udp(PC1, WAN_ADDR, 50000, b.sport, b"hi"), 0.3)
    assert (got.src, got.sport, got.dst, got.dport) == (WAN_ADDR, a.sport, peer, 51000)


def test_nothing_owns_the_destination_the_router_answers() -> None:
    r = router()
    rst = hop(r, "lan0", tcp(PC1, WAN_ADDR, 43000, 8080, "S"), 0.0)  # no forward on 8080
    assert (rst.src, rst.sport, rst.dst, rst.dport, str(rst[TCP].flags)) == (WAN_ADDR, 8080, PC1, 43000, "RA")
    unreach = hop(r, "lan0", udp(PC1, WAN_ADDR, 43000, 8080), 0.0)
    assert (unreach.src, unreach[ICMP].type, unreach[ICMP].code) == (WAN_ADDR, 3, 3)
    assert r.sessions(0.0) == []


def test_sender_outside_every_nat_range_gets_no_reflection() -> None:
    r = make_router(RULES, base="""\
interface lan0 add 192.168.0.1/24
interface lan1 add 203.0.113.1/24
route add default 203.0.113.254
nat napt add private 192.168.0.0-192.168.0.127 interface lan1
""")
    rst = hop(r, "lan0", tcp("192.168.0.200", WAN_ADDR, 43000, 7000, "S"), 0.0)
    assert str(rst[TCP].flags) == "RA" and counters(r)["reflect_no_owner"] == 1
    assert r.sessions(0.0) == []


def test_reflected_sessions_are_listed_as_such() -> None:
    r = router()
    hop(r, "lan0", udp(PC1, WAN_ADDR, 40000, 7000), 0.0)
    recs = [s for s in r.sessions(0.0) if s["protocol"] == "udp"]
    assert {(s["type"], s["inside"], s["remote"], s["reflect"]) for s in recs} == {
        ("napt", PC1, WAN_ADDR, True), ("snapt", PC2, WAN_ADDR, True)}
    text = format_status_nat(recs)
    assert text.count("reflect: hairpin, inside to inside through 203.0.113.1 (nat reflect)") == 2
    one(r.handle("lan0", udp(PC1, SRV, 40000, 53), 0.0), "lan1")
    assert "reflect" not in [s for s in r.sessions(0.0) if s["remote"] == SRV][0]


def test_reflection_off_answers_at_once() -> None:
    r = router("nat option reflect listed\n")
    rst = hop(r, "lan0", tcp(PC1, WAN_ADDR, 44000, 7000, "S"), 0.0)
    assert (rst.src, rst.sport, str(rst[TCP].flags), rst[TCP].ack) == (WAN_ADDR, 7000, "RA", 1)
    unreach = hop(r, "lan0", udp(PC1, STATIC_G, 44000, 7000), 0.0)
    assert (unreach.src, unreach[ICMP].type, unreach[ICMP].code) == (STATIC_G, 3, 3)
    assert unreach[UDPerror].dport == 7000
    assert r.sessions(0.0) == [] and "reflected_packets" not in counters(r)
    # the SEIL line turns it on for that interface
    r.reconfigure(passnat.parse_config(BASE + RULES + "nat option reflect listed\nnat reflect add interface lan0\n"))
    assert hop(r, "lan0", udp(PC1, WAN_ADDR, 44000, 7000), 1.0).dst == PC2


# ------------------------------------------------------------ ICMP errors, TTL, filter


def test_icmp_error_about_a_hairpinned_packet_reaches_the_sender() -> None:
    r = router()
    got = hop(r, "lan0", udp(PC1, WAN_ADDR, 40000, 7000), 0.0)
    # PC2 has nothing on 7000 and says so about the packet as it received it
    err = hop(r, "lan0", icmp_error(PC2, WAN_ADDR, raw(got)), 0.1)
    assert (err.src, err.dst, err[ICMP].type) == (WAN_ADDR, PC1, 3)
    assert (err[IPerror].src, err[IPerror].dst) == (PC1, WAN_ADDR)
    assert (err[UDPerror].sport, err[UDPerror].dport) == (40000, 7000)


def test_ttl_1_gets_time_exceeded_before_any_session() -> None:
    r = router()
    err = hop(r, "lan0", udp(PC1, WAN_ADDR, 40000, 7000, ttl=1), 0.0)
    assert (err.src, err.dst, err[ICMP].type) == ("192.168.0.1", PC1, 11)
    assert r.sessions(0.0) == []


def test_the_filter_sees_a_reflected_packet_at_every_point() -> None:
    # an inbound pass list on the WAN that publishes only PC2:7000 -- the rule that lets the world
    # in lets the hairpinned packets in too, and a block on the WAN blocks them
    r = router("filter add web interface lan1 direction in action pass protocol udp dst 192.168.0.12 "
               "dstport 7000\nfilter add rest interface lan1 direction in action block\n")
    assert hop(r, "lan0", udp(PC1, WAN_ADDR, 40000, 7000), 0.0).dst == PC2
    assert r.handle("lan0", udp(PC1, STATIC_G, 40000, 7000), 0.0) == []
    assert counters(r)["filter_block"] == 1
    assert [s for s in r.sessions(0.0) if s["remote"] == STATIC_G] == []  # rolled back
    status = {rule["name"]: rule for rule in r.filter_status(0.0)["rules"]}
    assert status["web"]["count"] == 1 and status["rest"]["count"] == 1


# ------------------------------------------------------------ fragments


def test_fragmented_datagram_is_reflected_in_any_order() -> None:
    payload = bytes(range(256)) * 8
    frags = split(raw(IP(src=PC1, dst=WAN_ADDR, id=77) / UDP(sport=40000, dport=7000) / payload), 1000)
    assert len(frags) == 3
    for order in permutations(range(3)):
        r = router()
        outs = []
        for i in order:
            outs += r.handle("lan0", frags[i], 0.0)
        assert len(outs) == 3 and {o.interface for o in outs} == {"lan0"}
        whole = IP(reassemble([o.packet for o in outs]))
        assert (whole.src, whole[UDP].sport, whole.dst, whole[UDP].dport) == (WAN_ADDR, 40000, PC2, 7000)
        assert bytes(whole[UDP].payload) == payload
        verify(raw(whole))


# ------------------------------------------------------------ PPTP, GRE, ESP


def test_pptp_server_published_with_snapt_reached_from_inside() -> None:
    """SEIL's documented case: a PPTP server behind SNAPT used through the global address."""
    r = router()
    seq = {PC1: 1000, PC2: 5000}

    def ctl(src: str, sport: int, dport: int, flags: str, payload: bytes = b"") -> IP:
        pkt = raw(IP(src=src, dst=WAN_ADDR) / TCP(sport=sport, dport=dport, flags=flags, seq=seq[src]) / payload)
        seq[src] += len(payload) + (1 if "S" in flags else 0)
        return hop(r, "lan0", pkt, 0.0)

    ctl(PC1, 45000, 1723, "S")
    ctl(PC2, 1723, 45000, "SA")
    ctl(PC1, 45000, 1723, "PA", raw(PPTPStartControlConnectionRequest()))
    ctl(PC2, 1723, 45000, "PA", raw(PPTPStartControlConnectionReply()))
    ocrq = PPTP(raw(ctl(PC1, 45000, 1723, "PA", raw(PPTPOutgoingCallRequest(call_id=7)))[TCP].payload))
    client_outside = ocrq.call_id  # the Call ID the server sees for PC1's call
    ocrp = PPTP(raw(ctl(PC2, 1723, 45000, "PA", raw(PPTPOutgoingCallReply(
        call_id=9, peer_call_id=client_outside, result_code=1)))[TCP].payload))
    server_outside = ocrp.call_id  # the Call ID PC1 sees for the server's side
    assert ocrp.peer_call_id == 7  # PC1 sees its own Call ID back
    # GRE both ways, each carrying the receiver's Call ID as that receiver knows it
    g1 = hop(r, "lan0", gre(PC1, WAN_ADDR, server_outside), 0.1)
    assert (g1.src, g1.dst, g1[GRE_PPTP].call_id) == (WAN_ADDR, PC2, 9)
    g2 = hop(r, "lan0", gre(PC2, WAN_ADDR, client_outside), 0.2)
    assert (g2.src, g2.dst, g2[GRE_PPTP].call_id) == (WAN_ADDR, PC1, 7)
    recs = [s for s in r.sessions(0.3) if s["protocol"] == "gre"]
    assert len(recs) == 2 and all(s["reflect"] for s in recs)
    calls = {s["type"]: s["pptp"] for s in r.sessions(0.3) if s["protocol"] == "tcp"}
    assert calls["napt"]["role"] == "client inside" and calls["snapt"]["role"] == "server inside"


def test_esp_to_a_published_esp_server_from_inside() -> None:
    for mode in ("spi", "first-come"):
        r = router(f"nat snapt add protocol esp forward {PC2} interface lan1\n"
                   f"nat option esp-passthrough {mode}\n")
        for i in range(3):
            got = hop(r, "lan0", _esp(PC1, WAN_ADDR, 0x1001, i + 1, b"to-server"), 0.01 * i)
            assert (got.src, got.dst) == (WAN_ADDR, PC2), mode
            back = hop(r, "lan0", _esp(PC2, WAN_ADDR, 0x2002, i + 1, b"to-client"), 0.01 * i + 0.005)
            assert (back.src, back.dst) == (WAN_ADDR, PC1), mode
        # an outside client of the same server is unaffected
        out = one(r.handle("lan1", _esp(SRV, WAN_ADDR, 0x3003, 1, b"x"), 1.0), "lan0")
        assert out.dst == PC2


def test_address_only_protocol_without_an_owner_is_answered_by_the_router() -> None:
    r = router()
    pkt = raw(IP(src=PC1, dst=WAN_ADDR, proto=132) / (b"\0" * 24))  # SCTP: nothing published
    unreach = hop(r, "lan0", pkt, 0.0)
    assert (unreach.src, unreach[ICMP].type, unreach[ICMP].code) == (WAN_ADDR, 3, 2)
    assert r.sessions(0.0) == []


@pytest.mark.parametrize("pure", [True, False])
def test_state_file_keeps_hairpinned_sessions(pure: bool) -> None:
    r = router()
    hop(r, "lan0", udp(PC1, WAN_ADDR, 40000, 7000), 0.0)
    state = r.export_state(1.0)
    r2 = passnat.Router(r.config, speedups=not pure)
    assert r2.import_state(state, 2.0, 1.0) == 2
    back = hop(r2, "lan0", udp(PC2, WAN_ADDR, 7000, 40000), 2.0)
    assert (back.src, back.sport, back.dst, back.dport) == (WAN_ADDR, 7000, PC1, 40000)


def test_ipsec_server_published_inside_reached_from_inside_server_first() -> None:
    """IKE (UDP 500) and raw ESP to an inside IPsec server through the global address; the
    server sends first on the new SA: each side's SPI reaches the other, never the sender."""
    r = router(f"nat snapt add protocol udp listen 500 forward {PC2} 500 interface lan1\n"
               f"nat snapt add protocol esp forward {PC2} interface lan1\n")
    hdr = b"\x11" * 8 + b"\x22" * 8 + bytes([35, 0x20, 35])
    req = hop(r, "lan0", udp(PC1, WAN_ADDR, 500, 500, hdr + b"\x08" + b"\0\0\0\x01\0\0\0\x1c"), 0.0)
    assert (req.src, req.dst, req.dport) == (WAN_ADDR, PC2, 500)
    rsp = hop(r, "lan0", udp(PC2, WAN_ADDR, 500, req.sport, hdr + b"\x20" + b"\0\0\0\x01\0\0\0\x1c"), 0.01)
    assert (rsp.src, rsp.sport, rsp.dst, rsp.dport) == (WAN_ADDR, 500, PC1, 500)
    for i in range(3):
        down = hop(r, "lan0", _esp(PC2, WAN_ADDR, 0xA1, i + 1, b"server-first"), 0.02 + i * 0.01)
        assert (down.src, down.dst) == (WAN_ADDR, PC1)
    for i in range(3):
        up = hop(r, "lan0", _esp(PC1, WAN_ADDR, 0xB2, i + 1, b"client"), 0.1 + i * 0.01)
        assert (up.src, up.dst) == (WAN_ADDR, PC2)
    c = counters(r)
    assert c["ike_child_sa_exchanges"] == 2 and "esp_inbound_held_ambiguous" not in c


def test_icmp_echo_to_a_port_forwarded_global_with_snapt_protocol_icmp() -> None:
    r = router(f"nat snapt add protocol icmp forward {PC2} interface lan1\n")
    # from outside: the rule sends pings of the global address to PC2 (no longer the router's)
    req = hop(r, "lan1", ping(SRV, WAN_ADDR, 0x51, seq=1), 0.0)
    assert (req.src, req.dst, req[ICMP].id) == (SRV, PC2, 0x51)
    rep = one(r.handle("lan0", ping(PC2, SRV, 0x51, seq=1, reply=True), 0.01), "lan1")
    assert (rep.src, rep.dst, rep[ICMP].type) == (WAN_ADDR, SRV, 0)
    # from inside, hairpinned: PC2 sees PC1's mapping, PC1 gets PC2's answer from the global address
    req = hop(r, "lan0", ping(PC1, WAN_ADDR, 0x52, seq=7), 0.1)
    assert (req.src, req.dst, req[ICMP].type, req[ICMP].id) == (WAN_ADDR, PC2, 8, 0x52)
    rep = hop(r, "lan0", ping(PC2, WAN_ADDR, 0x52, seq=7, reply=True), 0.11)
    assert (rep.src, rep.dst, rep[ICMP].type, rep[ICMP].id, rep[ICMP].seq) == (WAN_ADDR, PC1, 0, 0x52, 7)
    assert counters(r)["icmp_snapt_forwarded"] == 2 and "local_echo_replies" not in counters(r)


@pytest.mark.parametrize("lean", [True, False])
def test_a_napt_global_that_is_no_interface_address_is_reflected_from_the_first_packet(lean: bool) -> None:
    """The lean path (plain outbound NAPT) must leave a packet to a global address alone."""
    r = passnat.Router(passnat.parse_config(
        BASE + "nat napt add global 203.0.113.9 interface lan1\n"
        f"nat snapt add protocol tcpudp listen 7000 forward {PC2} 7000 interface lan1\n"), lean=lean)
    got = hop(r, "lan0", udp(PC1, "203.0.113.9", 40000, 7000), 0.0)
    assert (got.src, got.dst, got.dport) == ("203.0.113.9", PC2, 7000)
    rst = hop(r, "lan0", tcp(PC1, "203.0.113.9", 40000, 7001, "S"), 0.0)
    assert (rst.src, str(rst[TCP].flags)) == ("203.0.113.9", "RA")


def test_a_bound_nat_dynamic_address_is_reflected_and_an_unbound_one_is_the_routers() -> None:
    r = make_router("nat dynamic add private 192.168.0.13 interface lan1\n"
                    "nat dynamic add global 203.0.113.6 interface lan1\n")
    rst = hop(r, "lan0", tcp(PC1, "203.0.113.6", 46000, 80, "S"), 0.0)  # bound to nobody yet
    assert (rst.src, str(rst[TCP].flags)) == ("203.0.113.6", "RA")
    assert one(r.handle("lan0", udp(PC3, SRV, 5000, 53), 0.1), "lan1").src == "203.0.113.6"
    syn = hop(r, "lan0", tcp(PC1, "203.0.113.6", 46000, 80, "S"), 0.2)
    assert (syn.src, syn.sport, syn.dst, syn.dport) == (WAN_ADDR, 46000, PC3, 80)
    synack = hop(r, "lan0", tcp(PC3, WAN_ADDR, 80, 46000, "SA"), 0.3)
    assert (synack.src, synack.sport, synack.dst, synack.dport) == ("203.0.113.6", 80, PC1, 46000)
