"""The fast path: the C build and the pure-Python one give the same bytes, and both hit.

Both routers see the same traffic (new sessions on the slow path, then
established packets); every output must be identical, and the established
packets must not have reached the slow path (no parse counters move).
"""
from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import passnat
from passnat import speedups
from passnat.nat import router as router_module
from tests.nat.helpers import BASE, PC1, PC2, SRV, WAN_ADDR, tcp, udp, verify


def pair() -> tuple[passnat.Router, passnat.Router]:
    cfg = passnat.parse_config(BASE)
    return passnat.Router(cfg, speedups=True), passnat.Router(cfg, speedups=False)


def test_c_fast_path_is_built() -> None:
    """CI builds the extension; if this fails the build is broken (pure Python still works)."""
    assert speedups.built() is not None
    assert (router_module._c_fast is None) == bool(os.environ.get("PASSNAT_PURE"))


PORTS = st.integers(1, 65535).filter(lambda p: p not in (500, 1723))  # IKE and PPTP are slow-path by design


@settings(max_examples=300, deadline=None)
@given(PORTS, PORTS, st.binary(max_size=64), st.booleans(),
       st.integers(2, 255), st.booleans())
def test_c_and_python_fast_paths_agree(sport: int, dport: int, payload: bytes, use_tcp: bool, ttl: int,
                                       zero_udp_checksum: bool) -> None:
    fast, pure = pair()
    if fast._cfast is None:
        pytest.fail("passnat._speedups is not built")
    host = PC1 if sport % 2 else PC2
    first = tcp(host, SRV, sport, dport, "S") if use_tcp else udp(host, SRV, sport, dport)
    outs = fast.handle("lan0", first, 0.0)
    assert [o.packet for o in outs] == [o.packet for o in pure.handle("lan0", first, 0.0)]
    oport = int.from_bytes(outs[0].packet[20:22], "big") if outs else sport
    if use_tcp:
        reply = tcp(SRV, WAN_ADDR, dport, oport, "SA")
        fast.handle("lan1", reply, 0.1), pure.handle("lan1", reply, 0.1)
        pkts = [("lan0", tcp(host, SRV, sport, dport, "PA", payload, ttl=ttl)),
                ("lan1", tcp(SRV, WAN_ADDR, dport, oport, "PA", payload, ttl=ttl))]
    else:
        reply = udp(SRV, WAN_ADDR, dport, oport)  # the first reply is the slow path's (Session.ur)
        assert len(fast.handle("lan1", reply, 0.1)) == len(pure.handle("lan1", reply, 0.1)) == 1
        out_pkt = bytearray(udp(host, SRV, sport, dport, payload, ttl=ttl))
        in_pkt = bytearray(udp(SRV, WAN_ADDR, dport, oport, payload, ttl=ttl))
        if zero_udp_checksum:
            out_pkt[26:28] = in_pkt[26:28] = b"\0\0"
        pkts = [("lan0", bytes(out_pkt)), ("lan1", bytes(in_pkt))]
    slow_before = (fast.counters()["slow_path_packets"], pure.counters()["slow_path_packets"])
    for iface, pkt in pkts:
        a = fast.handle(iface, pkt, 1.0)
        b = pure.handle(iface, pkt, 1.0)
        assert [(o.interface, o.next_hop, o.packet) for o in a] == [(o.interface, o.next_hop, o.packet) for o in b]
        for o in a:
            verify(o.packet)
    assert (fast.counters()["slow_path_packets"], pure.counters()["slow_path_packets"]) == slow_before
    assert fast.counters() == pure.counters()
    assert [s["last"] for s in fast.sessions(2.0)] == [s["last"] for s in pure.sessions(2.0)]


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 65535), st.binary(max_size=65), st.integers(2, 255), st.integers(0, 4))
def test_icmp_echo_takes_the_fast_path_once_answered(ident: int, payload: bytes, ttl: int, corrupt: int) -> None:
    """A ping's requests are fast from the start, its replies once the first one was seen (it sets the
    'answered' timer); both paths agree, and a bad ICMP checksum is dropped by both, never forwarded."""
    from scapy.all import ICMP, IP, raw  # type: ignore[attr-defined]
    fast, pure = pair()
    if fast._cfast is None:
        pytest.fail("passnat._speedups is not built")

    def echo(src: str, dst: str, ident: int, reply: bool) -> bytes:
        b = bytearray(raw(IP(src=src, dst=dst, ttl=ttl) / ICMP(type=0 if reply else 8, id=ident, seq=3) / payload))
        if corrupt == 1:
            b[-1 if payload else 23] ^= 0x40  # a bad ICMP checksum
        return bytes(b)

    first = raw(IP(src=PC1, dst=SRV) / ICMP(type=8, id=ident, seq=1) / b"x")
    outs = fast.handle("lan0", first, 0.0)
    assert [o.packet for o in outs] == [o.packet for o in pure.handle("lan0", first, 0.0)]
    oid = int.from_bytes(outs[0].packet[24:26], "big")
    answer = raw(IP(src=SRV, dst=WAN_ADDR) / ICMP(type=0, id=oid, seq=1) / b"x")
    assert [o.packet for o in fast.handle("lan1", answer, 0.1)] == [o.packet for o in pure.handle("lan1", answer, 0.1)]
    before = (fast.counters()["slow_path_packets"], pure.counters()["slow_path_packets"])
    for iface, pkt in (("lan0", echo(PC1, SRV, ident, False)), ("lan1", echo(SRV, WAN_ADDR, oid, True))):
        a, b = fast.handle(iface, pkt, 1.0), pure.handle(iface, pkt, 1.0)
        assert [(o.interface, o.next_hop, o.packet) for o in a] == [(o.interface, o.next_hop, o.packet) for o in b]
        for o in a:
            verify(o.packet)
        assert bool(a) == (corrupt != 1)
    assert fast.counters() == pure.counters()
    slow = (fast.counters()["slow_path_packets"], pure.counters()["slow_path_packets"])
    assert slow == before if corrupt != 1 else slow == (before[0] + 2, before[1] + 2)
    assert fast.counters()["bad_l4_header"] == (2 if corrupt == 1 else 0)


@settings(max_examples=120, deadline=None)
@given(st.integers(0, 255), st.booleans())
def test_tcp_flags_on_an_established_flow(flags: int, inbound: bool) -> None:
    """Only ACK segments without SYN/FIN/RST take the fast path (C and Python alike); a flag
    combination no stack sends (no flags, SYN+FIN, FIN/PSH/URG without ACK, ...) is dropped and
    counted even on an established flow (issue 13); every other segment is forwarded."""
    from passnat.packet.tcp import VALID_FLAGS, VALID_FLAGS_MASK
    fast, pure = pair()
    if fast._cfast is None:
        pytest.fail("passnat._speedups is not built")
    for r in (fast, pure):
        r.handle("lan0", tcp(PC1, SRV, 40000, 443, "S"), 0.0)
        r.handle("lan1", tcp(SRV, WAN_ADDR, 443, 40000, "SA"), 0.1)
        r.handle("lan0", tcp(PC1, SRV, 40000, 443, "A"), 0.2)
    seg = tcp(SRV, WAN_ADDR, 443, 40000, flags, b"data") if inbound else tcp(PC1, SRV, 40000, 443, flags, b"data")
    iface = "lan1" if inbound else "lan0"
    slow_before = fast.counters()["slow_path_packets"]
    a, b = fast.handle(iface, seg, 1.0), pure.handle(iface, seg, 1.0)
    assert [(o.interface, o.packet) for o in a] == [(o.interface, o.packet) for o in b]
    assert fast.counters() == pure.counters()
    valid = VALID_FLAGS[flags & VALID_FLAGS_MASK]
    assert bool(a) == valid
    assert fast.counters()["tcp_invalid_flags"] == (0 if valid else 1)
    took_fast = flags & 0x17 == 0x10
    assert fast.counters()["slow_path_packets"] == slow_before + (0 if took_fast else 1)


def test_a_bytearray_or_memoryview_packet_takes_the_fast_path_too() -> None:
    for r in pair():
        first = udp(PC1, SRV, 4000, 53)
        out = r.handle("lan0", first, 0.0)
        oport = int.from_bytes(out[0].packet[20:22], "big")
        r.handle("lan1", udp(SRV, WAN_ADDR, 53, oport), 0.1)  # answered: the flow is established
        slow = r.counters()["slow_path_packets"]
        pkt = udp(PC1, SRV, 4000, 53, b"more")
        want = [o.packet for o in r.handle("lan0", pkt, 0.2)]
        assert [o.packet for o in r.handle("lan0", bytearray(pkt), 0.3)] == want
        assert [o.packet for o in r.handle("lan0", memoryview(pkt), 0.4)] == want
        assert r.counters()["slow_path_packets"] == slow  # none of the three reached the slow path
