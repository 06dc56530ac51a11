"""What one filter rule matches (R16), table-driven through the router.

Each row: a rule (``filter add r <row>``, action block, default pass), the
packet, where it arrives, and whether the rule blocks it.  Outbound packets
are seen pre-NAT at ``in`` on lan0 and ``out`` on lan1; replies post-NAT at
``in`` on lan1 and ``out`` on lan0.
"""
from __future__ import annotations

import pytest
from scapy.all import (  # type: ignore[attr-defined]
    GRE,
    ICMP,
    IP,
    TCP,
    UDP,
    IPOption_Router_Alert,
    IPOption_RR,
    Raw,
    raw,
)

import passnat
from tests.nat.helpers import (
    BASE,
    PC1,
    PC2,
    PC3,
    SRV,
    WAN_ADDR,
    counters,
    make_router,
    one,
    ping,
    tcp,
    udp,
)

LAN_ADDR = "192.168.0.1"


def esp(src: str, dst: str, spi: int = 0x1001) -> bytes:
    return raw(IP(src=src, dst=dst, proto=50) / Raw(spi.to_bytes(4, "big") + b"\0\0\0\1" + b"e" * 24))


def ah(src: str, dst: str) -> bytes:
    return raw(IP(src=src, dst=dst, proto=51) / Raw(b"\x32\x04\0\0" + b"\0\0\x10\x01" + b"\0" * 16))


def gre(src: str, dst: str) -> bytes:
    return raw(IP(src=src, dst=dst) / GRE(proto=0x0800) / b"inner")


def opts(*options: object) -> bytes:
    return raw(IP(src=PC1, dst=SRV, options=list(options)) / UDP(sport=5000, dport=53) / b"q")


U = udp(PC1, SRV, 5000, 53)
OUT = [
    # interface and direction
    ("interface lan0 direction in", U, True),
    ("interface lan0 direction out", U, False),
    ("interface lan1 direction out", U, True),
    ("interface lan1 direction in", U, False),
    ("interface any direction in", U, True),
    ("interface any direction out", U, True),
    ("interface any direction in/out", U, True),
    ("interface lan2 direction in/out", U, False),
    # protocol names and numbers
    ("interface any direction in protocol udp", U, True),
    ("interface any direction in protocol 17", U, True),
    ("interface any direction in protocol tcp", U, False),
    ("interface any direction in protocol any", U, True),
    ("interface any direction in protocol tcpudp", U, True),
    ("interface any direction in protocol tcpudp", tcp(PC1, SRV, 4000, 80, "S"), True),
    ("interface any direction in protocol tcpudp", ping(PC1, SRV, 7), False),
    ("interface any direction in protocol tcp", tcp(PC1, SRV, 4000, 80, "S"), True),
    ("interface any direction in protocol 6", tcp(PC1, SRV, 4000, 80, "S"), True),
    ("interface any direction in protocol tcp-synonly", tcp(PC1, SRV, 4000, 80, "S"), True),
    ("interface any direction in protocol tcp-synonly", tcp(PC1, SRV, 4000, 80, "SA"), False),
    ("interface any direction in protocol tcp-synonly", tcp(PC1, SRV, 4000, 80, "A"), False),
    ("interface any direction in protocol tcp-synonly", U, False),
    ("interface any direction in protocol tcp-established", tcp(PC1, SRV, 4000, 80, "A"), True),
    ("interface any direction in protocol tcp-established", tcp(PC1, SRV, 4000, 80, "SA"), True),
    ("interface any direction in protocol tcp-established", tcp(PC1, SRV, 4000, 80, "R"), True),
    ("interface any direction in protocol tcp-established", tcp(PC1, SRV, 4000, 80, "FA"), True),
    ("interface any direction in protocol tcp-established", tcp(PC1, SRV, 4000, 80, "S"), False),
    ("interface any direction in protocol esp", esp(PC1, SRV), True),
    ("interface any direction in protocol 50", esp(PC1, SRV), True),
    ("interface any direction in protocol esp", U, False),
    ("interface any direction in protocol ah", ah(PC1, SRV), True),
    ("interface any direction in protocol gre", gre(PC1, SRV), True),
    ("interface any direction in protocol 47", gre(PC1, SRV), True),
    ("interface any direction in protocol gre", esp(PC1, SRV), False),
    ("interface any direction in protocol icmp", ping(PC1, SRV, 7), True),
    ("interface any direction in protocol icmp icmp-type 8", ping(PC1, SRV, 7), True),
    ("interface any direction in protocol icmp icmp-type 0", ping(PC1, SRV, 7), False),
    ("interface any direction in protocol icmp icmp-type any", ping(PC1, SRV, 7), True),
    # addresses
    ("interface any direction in src 192.168.0.11", U, True),
    ("interface any direction in src 192.168.0.12", U, False),
    ("interface any direction in src 192.168.0.0/24", U, True),
    ("interface any direction in src 192.168.1.0/24", U, False),
    ("interface any direction in src 192.168.0.10-192.168.0.12", U, True),
    ("interface any direction in src 192.168.0.10-192.168.0.12", udp(PC3, SRV, 5000, 53), False),
    ("interface any direction in src lan0", U, True),                 # lan0's subnet
    ("interface any direction in src lan1", U, False),
    ("interface any direction in src any", U, True),
    ("interface any direction in dst 198.51.100.0/24", U, True),
    ("interface any direction in dst 10.0.0.0/8", U, False),
    ("interface any direction in dst lan1", udp(PC1, "203.0.113.10", 5000, 53), True),
    ("interface any direction in dst self", ping(PC1, LAN_ADDR, 7), True),
    ("interface any direction in dst self", ping(PC1, WAN_ADDR, 7), True),
    ("interface any direction in dst self", ping(PC1, SRV, 7), False),
    ("interface any direction in src self", U, False),
    # ports
    ("interface any direction in protocol udp srcport 5000", U, True),
    ("interface any direction in protocol udp srcport 1-4999", U, False),
    ("interface any direction in protocol udp dstport 53", U, True),
    ("interface any direction in protocol udp dstport 50-60", U, True),
    ("interface any direction in protocol udp dstport 54-65535", U, False),
    ("interface any direction in dstport 53", U, True),                 # ports alone mean tcpudp
    ("interface any direction in dstport 53", tcp(PC1, SRV, 4000, 53, "S"), True),
    ("interface any direction in protocol tcp dstport 53", U, False),
    ("interface any direction in protocol tcp-synonly dstport 80", tcp(PC1, SRV, 4000, 80, "S"), True),
    # IP options
    ("interface any direction in ipopts none", U, True),
    ("interface any direction in ipopts none", opts(IPOption_Router_Alert()), False),
    ("interface any direction in ipopts any", opts(IPOption_Router_Alert()), True),
    ("interface any direction in ipopts any", U, False),
    ("interface any direction in ipopts 148", opts(IPOption_Router_Alert()), True),
    ("interface any direction in ipopts 148", opts(IPOption_RR(routers=["0.0.0.0"])), False),
    ("interface any direction in ipopts 7", opts(IPOption_RR(routers=["0.0.0.0"])), True),
    # enable / disable
    ("interface any direction in enable", U, True),
    ("interface any direction in disable", U, False),
]


@pytest.mark.parametrize("rule, packet, blocked", OUT, ids=[f"{i}:{r[0]}" for i, r in enumerate(OUT)])
def test_outbound_packet(rule: str, packet: bytes, blocked: bool) -> None:
    r = make_router(f"filter add r {rule} action block\n")
    outs = r.handle("lan0", packet, 0.0)
    assert (outs == []) is blocked
    assert counters(r).get("filter_block", 0) == int(blocked)
    assert r.filter_status(0.0)["rules"][0]["count"] == int(blocked)


def _reply_router(rule: str) -> passnat.Router:
    """A router with a UDP session PC1:5000 <-> SRV:6000, then the rule configured."""
    r = make_router()
    one(r.handle("lan0", udp(PC1, SRV, 5000, 6000), 0.0))
    r.reconfigure(passnat.parse_config(BASE + f"filter add r {rule} action block\n"))
    return r


REPLY = udp(SRV, WAN_ADDR, 6000, 5000)
IN = [
    ("interface lan1 direction in dst 192.168.0.11", True),        # post-NAT: the inside host
    ("interface lan1 direction in dst 203.0.113.1", False),        # not the global address
    ("interface lan1 direction in dst self", False),
    ("interface lan1 direction in protocol udp srcport 6000 dstport 5000", True),
    ("interface lan0 direction out dst 192.168.0.11", True),
    ("interface lan0 direction out src 198.51.100.7", True),
    ("interface lan0 direction in", False),
    ("interface lan1 direction out", False),
]


@pytest.mark.parametrize("rule, blocked", IN, ids=[r[0] for r in IN])
def test_reply_packet_is_seen_post_nat(rule: str, blocked: bool) -> None:
    r = _reply_router(rule)
    outs = r.handle("lan1", REPLY, 1.0)
    assert (outs == []) is blocked
    assert r.filter_status(1.0)["rules"][0]["count"] == int(blocked)


@pytest.mark.parametrize("rule, blocked", [
    ("interface lan1 direction out src 192.168.0.11", True),       # pre-NAT: the inside host
    ("interface lan1 direction out src 203.0.113.1", False),       # the global address is not seen
    ("interface lan1 direction out src lan0", True),
])
def test_outbound_is_seen_pre_nat(rule: str, blocked: bool) -> None:
    r = make_router(f"filter add r {rule} action block\n")
    assert (r.handle("lan0", U, 0.0) == []) is blocked


def test_dst_self_blocks_ping_to_the_router() -> None:
    r = make_router("filter add r interface any direction in action block protocol icmp dst self\n")
    assert r.handle("lan0", ping(PC1, LAN_ADDR, 1), 0.0) == []
    assert r.handle("lan1", ping(SRV, WAN_ADDR, 1), 0.0) == []
    assert r.filter_status(0.0)["rules"][0]["count"] == 2
    one(r.handle("lan0", ping(PC1, SRV, 1), 0.0), "lan1")        # transit pings pass
    assert counters(r).get("local_echo_replies", 0) == 0


def test_nat_global_address_is_self() -> None:
    r = make_router("nat napt add global 203.0.113.5 interface lan1\n"
                    "filter add r interface lan1 direction in action block dst self\n")
    assert r.handle("lan1", ping(SRV, "203.0.113.5", 1), 0.0) == []
    assert r.filter_status(0.0)["rules"][0]["count"] == 1


def test_rule_naming_an_unknown_interface_never_matches() -> None:
    r = make_router("filter add r interface lan5 direction in/out action block\n")
    one(r.handle("lan0", U, 0.0), "lan1")


def test_src_interface_without_addresses_matches_nothing() -> None:
    r = make_router("interface lan2 add dhcp\nfilter add r interface any direction in action block src lan2\n")
    one(r.handle("lan0", U, 0.0), "lan1")


def test_other_hosts_are_unaffected() -> None:
    r = make_router("filter add r interface lan0 direction in action block src 192.168.0.11\n")
    assert r.handle("lan0", U, 0.0) == []
    one(r.handle("lan0", udp(PC2, SRV, 5000, 53), 0.0), "lan1")
    one(r.handle("lan0", tcp(PC2, SRV, 4000, 80, "S", payload=b"x"), 0.0), "lan1")
    one(r.handle("lan0", raw(IP(src=PC2, dst=SRV) / ICMP() / b"x"), 0.0), "lan1")
    one(r.handle("lan0", raw(IP(src=PC2, dst=SRV) / TCP(sport=1, dport=2, flags="S")), 0.0), "lan1")
    one(r.handle("lan0", raw(IP(src=PC2, dst=SRV) / UDP(sport=1, dport=2)), 0.0), "lan1")
