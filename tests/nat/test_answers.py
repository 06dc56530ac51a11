"""Answers instead of silence (R27): closed services, and the fragments of a dropped datagram.

A LAN host that sends the router something it does not serve gets a TCP RST
or an ICMP port/protocol unreachable at once (rate limited, RFC 1812
§4.3.2.8); the WAN side stays silent unless ``option ip reject all``.  A
datagram whose first fragment was dropped has its later fragments dropped at
once, not held for the requeueing timeout.
"""
from __future__ import annotations

import pytest
from scapy.all import ICMP, IP, TCP, UDP, raw
from scapy.layers.inet import IPerror, TCPerror, UDPerror

from passnat.nat import fragments as fragmod
from tests.nat.esp_sim import _esp
from tests.nat.fragment_helpers import split
from tests.nat.helpers import GW, PC1, SRV, WAN_ADDR, counters, make_router, one, ping, tcp, udp

LAN_ADDR = "192.168.0.1"


# ------------------------------------------------------------ LAN side


def test_tcp_to_a_closed_port_of_the_router_gets_a_rst() -> None:
    r = make_router()
    syn = raw(IP(src=PC1, dst=LAN_ADDR) / TCP(sport=40000, dport=22, flags="S", seq=1000))
    rst = one(r.handle("lan0", syn, 0.0), "lan0")
    assert (rst.src, rst.dst, rst[TCP].sport, rst[TCP].dport) == (LAN_ADDR, PC1, 22, 40000)
    assert (str(rst[TCP].flags), rst[TCP].seq, rst[TCP].ack) == ("RA", 0, 1001)
    # a segment with ACK: <SEQ=SEG.ACK><CTL=RST>; data counts in SEG.LEN without ACK
    ack = raw(IP(src=PC1, dst=WAN_ADDR) / TCP(sport=40000, dport=443, flags="A", seq=5, ack=777))
    rst = one(r.handle("lan0", ack, 0.1), "lan0")
    assert (rst.src, str(rst[TCP].flags), rst[TCP].seq) == (WAN_ADDR, "R", 777)
    syn_data = raw(IP(src=PC1, dst=LAN_ADDR) / TCP(sport=40000, dport=80, flags="S", seq=10) / b"abc")
    assert one(r.handle("lan0", syn_data, 0.2))[TCP].ack == 14
    # a FIN without ACK is no stack's (a scan): dropped before it gets anywhere (issue 13)
    fin = raw(IP(src=PC1, dst=LAN_ADDR) / TCP(sport=40000, dport=80, flags="F", seq=10) / b"abc")
    assert r.handle("lan0", fin, 0.25) == []
    # never a RST for a RST
    assert r.handle("lan0", tcp(PC1, LAN_ADDR, 40000, 22, "R"), 0.3) == []
    c = counters(r)
    assert c["tcp_rst_sent"] == 3 and c["local_unsupported"] == 4 and c["tcp_invalid_flags"] == 1


def test_udp_and_other_protocols_get_icmp_unreachable_from_the_address_asked() -> None:
    r = make_router()
    unreach = one(r.handle("lan0", udp(PC1, WAN_ADDR, 40000, 53, b"q"), 0.0), "lan0")
    assert (unreach.src, unreach.dst, unreach[ICMP].type, unreach[ICMP].code) == (WAN_ADDR, PC1, 3, 3)
    assert (unreach[IPerror].dst, unreach[UDPerror].dport) == (WAN_ADDR, 53)
    esp = one(r.handle("lan0", _esp(PC1, LAN_ADDR, 0x1234, 1, b"x"), 0.0), "lan0")
    assert (esp.src, esp[ICMP].type, esp[ICMP].code, esp[IPerror].proto) == (LAN_ADDR, 3, 2, 50)
    gre = raw(IP(src=PC1, dst=LAN_ADDR, proto=47) / (b"\x00\x00\x08\x00" + b"y" * 8))
    assert one(r.handle("lan0", gre, 0.0))[ICMP].code == 2
    # ICMP itself: echo is answered, anything else is not (never an error about ICMP)
    assert one(r.handle("lan0", ping(PC1, LAN_ADDR, 1), 0.0))[ICMP].type == 0
    ts = raw(IP(src=PC1, dst=LAN_ADDR) / ICMP(type=13))
    assert r.handle("lan0", ts, 0.0) == []
    c = counters(r)
    assert c["icmp_sent_type3_code3"] == 1 and c["icmp_sent_type3_code2"] == 2 and c["local_unsupported"] == 4


def test_broadcasts_and_later_fragments_are_never_answered() -> None:
    r = make_router()
    assert r.handle("lan0", udp(PC1, "192.168.0.255", 40000, 137), 0.0) == []
    assert r.handle("lan0", udp(PC1, "255.255.255.255", 68, 67), 0.0) == []
    frags = split(raw(IP(src=PC1, dst=LAN_ADDR, id=9) / UDP(sport=1, dport=2) / (b"z" * 3000)), 1000)
    first = r.handle("lan0", frags[0], 0.0)
    assert [IP(o.packet)[ICMP].code for o in first] == [3]  # answered once, about the first fragment
    assert r.handle("lan0", frags[1], 0.0) == [] and r.handle("lan0", frags[2], 0.0) == []
    assert counters(r)["fragment_no_session"] == 2


def test_answers_are_rate_limited_rfc1812() -> None:
    r = make_router()
    outs = []
    for i in range(300):
        outs += r.handle("lan0", udp(PC1, LAN_ADDR, 40000 + i, 9), 0.0)
        outs += r.handle("lan0", tcp(PC1, LAN_ADDR, 40000 + i, 9, "S"), 0.0)
    assert len(outs) == 200  # one shared token bucket: 200 at once, 200 a second after
    c = counters(r)
    assert c["icmp_errors_rate_limited"] + c["tcp_rst_rate_limited"] == 400
    assert len(r.handle("lan0", udp(PC1, LAN_ADDR, 1, 9), 1.0)) == 1


def test_reject_off_is_silent() -> None:
    r = make_router("option ip reject off\n")
    assert r.handle("lan0", tcp(PC1, LAN_ADDR, 40000, 22, "S"), 0.0) == []
    assert r.handle("lan0", udp(PC1, LAN_ADDR, 40000, 53), 0.0) == []
    assert counters(r)["local_unsupported"] == 2


def test_a_filter_block_stays_silent() -> None:
    r = make_router("filter add ssh interface lan0 direction in action block protocol tcp dst self dstport 22\n")
    assert r.handle("lan0", tcp(PC1, LAN_ADDR, 40000, 22, "S"), 0.0) == []
    assert counters(r)["filter_block"] == 1
    assert one(r.handle("lan0", tcp(PC1, LAN_ADDR, 40000, 23, "S"), 0.0))[TCP].flags == "RA"


# ------------------------------------------------------------ WAN side


def test_wan_side_is_silent_by_default() -> None:
    r = make_router()
    assert r.handle("lan1", tcp(SRV, WAN_ADDR, 5555, 22, "S"), 0.0) == []
    assert r.handle("lan1", udp(SRV, WAN_ADDR, 5555, 53), 0.0) == []
    c = counters(r)
    assert c["no_session"] == 2 and "tcp_rst_sent" not in c and "icmp_sent_type3_code3" not in c


def test_reject_all_answers_closed_ports_on_the_wan_too() -> None:
    r = make_router("option ip reject all\n")
    rst = one(r.handle("lan1", tcp(SRV, WAN_ADDR, 5555, 22, "S"), 0.0), "lan1")
    assert (rst.src, rst.dst, str(rst[TCP].flags)) == (WAN_ADDR, SRV, "RA")
    assert str(one(r.handle("lan1", tcp(GW, "203.0.113.1", 5555, 23, "S"), 0.0))[TCP].flags) == "RA"
    unreach = one(r.handle("lan1", udp(SRV, WAN_ADDR, 5555, 53), 0.0), "lan1")
    assert (unreach.src, unreach[ICMP].code, unreach[UDPerror].dport) == (WAN_ADDR, 3, 53)
    # VPN protocols whose session expired stay silent: answering could make a peer tear down
    assert r.handle("lan1", _esp(SRV, WAN_ADDR, 1, 1, b"x"), 0.0) == []
    # translated traffic is untouched
    out = one(r.handle("lan0", udp(PC1, SRV, 40000, 53), 0.0), "lan1")
    assert one(r.handle("lan1", udp(SRV, WAN_ADDR, 53, out.sport), 0.1), "lan0").dst == PC1
    c = counters(r)
    assert c["tcp_rst_sent"] == 2 and c["icmp_sent_type3_code3"] == 1 and c["esp_unsolicited"] == 1


def test_icmp_error_quotes_the_packet_as_received() -> None:
    r = make_router()
    syn = tcp(PC1, LAN_ADDR, 40000, 25, "S")
    rst = one(r.handle("lan0", syn, 0.0))
    assert TCPerror not in rst  # a RST, not an ICMP error
    unreach = one(r.handle("lan0", udp(PC1, LAN_ADDR, 40000, 25, b"payload"), 0.0))
    assert raw(unreach[IPerror])[:20] == udp(PC1, LAN_ADDR, 40000, 25, b"payload")[:20]


# ------------------------------------------------------------ fragments of a dropped datagram


def _frags(src: str, dst: str, ident: int, sport: int = 4500, dport: int = 4500) -> list[bytes]:
    return split(raw(IP(src=src, dst=dst, id=ident) / UDP(sport=sport, dport=dport) / (b"f" * 2900)), 1000)


def test_later_fragments_of_an_unsolicited_first_fragment_are_dropped_at_once() -> None:
    r = make_router()
    first, *later = _frags(SRV, WAN_ADDR, 300)
    assert r.handle("lan1", first, 0.0) == []
    for f in later:
        assert r.handle("lan1", f, 0.001) == []
    c = counters(r)
    assert c["no_session"] == 1 and c["fragment_no_session"] == 2
    assert "fragments_held" not in c and r.fragments.stats()["held"] == 0


def test_fragments_held_before_their_dropped_first_are_dropped_when_it_is() -> None:
    r = make_router()
    first, *later = _frags(SRV, WAN_ADDR, 301)
    for f in later:
        assert r.handle("lan1", f, 0.0) == []
    assert r.fragments.stats()["held"] == 2
    assert r.handle("lan1", first, 0.01) == []
    assert r.fragments.stats()["held"] == 0
    c = counters(r)
    assert c["fragments_held"] == 2 and c["fragment_no_session"] == 2 and "fragment_hold_expired" not in c


def test_dropped_datagrams_are_remembered_briefly_and_boundedly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fragmod, "DROPPED_MAX", 10)
    r = make_router("option ip fragment-requeueing-timeout 2\n")
    for i in range(50):
        r.handle("lan1", _frags(SRV, WAN_ADDR, 1000 + i)[0], 0.0)
    assert r.fragments.stats()["dropped"] == 10  # the oldest forgotten first
    first, second, _ = _frags(SRV, WAN_ADDR, 1049)
    assert r.handle("lan1", second, 1.9) == [] and counters(r)["fragment_no_session"] == 1
    # after the requeueing timeout the id is forgotten: a later fragment is held again
    r.on_timer(2.5)
    assert r.fragments.stats()["dropped"] == 0
    assert r.handle("lan1", second, 2.6) == [] and counters(r)["fragments_held"] == 1


def test_a_filter_blocked_first_fragment_still_counts_on_its_rule() -> None:
    r = make_router("filter add nofrag interface lan0 direction in action block protocol udp dstport 4500\n")
    first, *later = _frags(PC1, SRV, 302)
    for f in (first, *later):
        assert r.handle("lan0", f, 0.0) == []
    status = {rule["name"]: rule for rule in r.filter_status(0.0)["rules"]}
    assert status["nofrag"]["count"] == 3
    assert counters(r)["filter_block"] == 3 and "fragment_no_session" not in counters(r)


def test_a_translated_first_fragment_is_not_forgotten_by_a_dropped_duplicate() -> None:
    r = make_router("interface lan1 mtu 576\n")
    first, *later = _frags(PC1, SRV, 303)
    first_df = IP(first)
    outs = r.handle("lan0", first, 0.0)
    assert outs  # translated (and fragmented again for the WAN's MTU)
    first_df.flags = "MF+DF"  # a copy with DF that cannot pass the MTU: dropped
    first_df.chksum = None
    assert r.handle("lan0", raw(first_df), 0.0)[0].interface == "lan0"  # fragmentation needed
    assert all(o.interface == "lan1" for f in later for o in r.handle("lan0", f, 0.0))
    assert "fragment_no_session" not in counters(r)
