"""No input makes the engine raise (h11's fuzz invariant): it forwards or drops with a reason.

Inputs: arbitrary bytes, and real packets of every kind the router handles
(TCP, UDP, ICMP queries and errors, ESP, AH, GRE v0/v1, PPTP control,
fragments, IP options) truncated, bit-flipped and spliced, on every interface,
against a router that already has sessions of each kind (so corrupted packets
also hit the fast path and the ALGs).
"""
from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.all import GRE, ICMP, IP, TCP, UDP, fragment, raw
from scapy.layers.l2 import GRE_PPTP
from scapy.layers.pptp import PPTPOutgoingCallReply, PPTPOutgoingCallRequest

import passnat
from passnat.nat.drops import Drop
from tests.nat.helpers import BASE, PC1, SRV, WAN_ADDR, icmp_error

CONFIG = BASE + """\
nat snapt add protocol tcp listen 1723 forward 192.168.0.10 1723 interface lan1
nat snapt add protocol esp forward 192.168.0.10 interface lan1
nat static add 192.168.0.20 203.0.113.20 interface lan1
interface lan1 mtu 1400
interface lan1 tcp-mss auto
"""

SEEDS = [
    raw(IP(src=PC1, dst=SRV) / TCP(sport=4000, dport=80, flags="S")),
    raw(IP(src=SRV, dst=WAN_ADDR) / TCP(sport=80, dport=4000, flags="SA")),
    raw(IP(src=PC1, dst=SRV) / TCP(sport=4000, dport=80, flags="PA") / (b"x" * 40)),
    raw(IP(src=PC1, dst=SRV) / UDP(sport=5000, dport=53) / b"query"),
    raw(IP(src=SRV, dst=WAN_ADDR) / UDP(sport=53, dport=5000) / b"answer"),
    raw(IP(src=PC1, dst=SRV) / ICMP(id=7) / b"ping"),
    raw(IP(src=SRV, dst=WAN_ADDR) / ICMP(type=0, id=7) / b"pong"),
    icmp_error(SRV, WAN_ADDR, raw(IP(src=WAN_ADDR, dst=SRV) / UDP(sport=5000, dport=53) / b"query")),
    raw(IP(src=PC1, dst=SRV, proto=50) / (b"\0\0\x10\x01\0\0\0\x01" + b"e" * 24)),
    raw(IP(src=SRV, dst=WAN_ADDR, proto=50) / (b"\0\0\x10\x02\0\0\0\x01" + b"e" * 24)),
    raw(IP(src=PC1, dst=SRV, proto=51) / (b"\x04\x04\0\0" + b"\0\0\1\0" + b"\0\0\0\1" + b"a" * 12)),
    raw(IP(src=PC1, dst=SRV) / GRE() / b"v0"),
    raw(IP(src=SRV, dst=WAN_ADDR) / GRE_PPTP(call_id=0x1234, seqnum_present=1, sequence_number=1) / b"ppp"),
    raw(IP(src=PC1, dst="203.0.113.10") / TCP(sport=4100, dport=1723, flags="S")),
    raw(IP(src=PC1, dst="203.0.113.10") / TCP(sport=4100, dport=1723, flags="PA") / raw(PPTPOutgoingCallRequest(call_id=9))),
    raw(IP(src="203.0.113.10", dst=WAN_ADDR) / TCP(sport=1723, dport=4100, flags="PA") /
        raw(PPTPOutgoingCallReply(call_id=5, peer_call_id=9))),
    raw(IP(src=PC1, dst=SRV, options=b"\x94\x04\0\0") / UDP(sport=1, dport=2) / b"opt"),
    raw(IP(src=PC1, dst="192.168.0.1") / ICMP() / b"to router"),
] + [raw(f) for f in fragment(IP(src=PC1, dst=SRV) / UDP(sport=6000, dport=7000) / (b"f" * 3000), fragsize=1000)]

IFACES = ["lan0", "lan1", "lan9"]


def fresh_router() -> passnat.Router:
    r = passnat.Router(passnat.parse_config(CONFIG), seed=3)
    for i, pkt in enumerate(SEEDS):  # set up sessions of every kind
        r.handle("lan1" if pkt[12:16] != bytes([192, 168, 0, 11]) else "lan0", pkt, i * 0.01)
    return r


ROUTER = fresh_router()


def events() -> int:
    """Everything counted so far (not the live session count, which timers lower)."""
    return sum(v for k, v in ROUTER.counters().items() if k != "sessions")


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    pkt = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(0, 4))):
        if not pkt:
            break
        op = draw(st.sampled_from(["flip", "cut", "splice", "set"]))
        i = draw(st.integers(0, len(pkt) - 1))
        if op == "flip":
            pkt[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "cut":
            del pkt[i:]
        elif op == "splice":
            pkt[i:i] = draw(st.binary(max_size=16))
        else:
            pkt[i] = draw(st.integers(0, 255))
    return bytes(pkt)


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200), st.sampled_from(IFACES), st.floats(0, 10_000, allow_nan=False))
def test_arbitrary_bytes_never_raise(data: bytes, iface: str, now: float) -> None:
    outs = ROUTER.handle(iface, data, now)
    assert isinstance(outs, list)
    assert ROUTER.counters().get("internal_error", 0) == 0


@settings(max_examples=4000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated(), st.sampled_from(IFACES), st.floats(0, 100, allow_nan=False))
def test_corrupted_real_packets_never_raise(data: bytes, iface: str, now: float) -> None:
    before = events()
    outs = ROUTER.handle(iface, data, now)
    for o in outs:
        assert isinstance(o.packet, bytes) and o.interface in ("lan0", "lan1")
        assert len(o.packet) >= 20 and o.packet[0] >> 4 == 4
    if not outs:  # a packet that produced nothing was counted somewhere (drop or hold)
        assert events() > before or data == b""
    assert ROUTER.counters().get("internal_error", 0) == 0


def test_no_internal_errors_and_every_drop_reason_is_a_counter() -> None:
    assert ROUTER.counters().get("internal_error", 0) == 0
    names = set(ROUTER.counters())
    assert {d.value for d in Drop} <= names


def _header_sum_ok(pkt: bytes) -> bool:
    ihl = (pkt[0] & 15) * 4
    s = sum(int.from_bytes(pkt[i:i + 2], "big") for i in range(0, ihl, 2))
    while s > 0xFFFF:
        s = (s & 0xFFFF) + (s >> 16)
    return s == 0xFFFF


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(SEEDS), st.integers(0, 19), st.integers(1, 0xFFFF), st.sampled_from(["lan0", "lan1"]),
       st.booleans())
def test_a_bad_ipv4_header_checksum_never_leaves_the_router(seed: bytes, at: int, xor: int, iface: str,
                                                            compiled: bool) -> None:
    """RFC 1812 §5.2.2: a packet whose IPv4 header checksum is wrong is dropped and counted as
    bad_ip_checksum, on every path: established flows (the C and the Python fast paths), new
    flows (the C and the Python lean paths) and the slow path."""
    r = passnat.Router(passnat.parse_config(CONFIG), seed=3, speedups=compiled)
    for i, pkt in enumerate(SEEDS):
        r.handle("lan1" if pkt[12:16] != bytes([192, 168, 0, 11]) else "lan0", pkt, i * 0.01)
    bad = bytearray(seed)
    word = at & ~1
    if word >= (bad[0] & 15) * 4 or word in (0, 2) or word == 6:
        word = 10  # keep version/IHL, length and fragment fields readable: only the sum is wrong
    bad[word] ^= xor >> 8
    bad[word + 1] ^= xor & 0xFF
    if _header_sum_ok(bytes(bad)):
        bad[10] ^= 0x01  # (the change kept the sum right: break it)
    before = r.counters()["bad_ip_checksum"]
    assert r.handle(iface, bytes(bad), 1.0) == []
    assert r.counters()["bad_ip_checksum"] == before + 1
