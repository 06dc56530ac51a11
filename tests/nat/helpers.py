"""Shared test helpers for the engine: a standard router, packet checks, a tiny network.

The standard topology (SEIL names):
  lan0  192.168.0.1/24   inside hosts 192.168.0.11, .12, .13
  lan1  203.0.113.1/24   the WAN (NAT interface); default route via 203.0.113.254
Servers live "on the internet" behind the gateway (198.51.100.0/24) or on the
WAN subnet (203.0.113.10, .20).
"""
from __future__ import annotations

from collections.abc import Iterable

from scapy.all import ICMP, IP, TCP, UDP, raw  # type: ignore[attr-defined]
from scapy.layers.inet import IPerror, TCPerror, UDPerror  # noqa: F401
from scapy.layers.l2 import GRE_PPTP

import passnat
from passnat import Output

BASE = """\
hostname "test"
interface lan0 add 192.168.0.1/24
interface lan1 add 203.0.113.1/24
route add default 203.0.113.254
nat napt add private 192.168.0.0-192.168.0.255 interface lan1
"""

WAN_ADDR = "203.0.113.1"
GW = "203.0.113.254"
PC1, PC2, PC3 = "192.168.0.11", "192.168.0.12", "192.168.0.13"
SRV = "198.51.100.7"


def make_router(extra: str = "", base: str = BASE, seed: int | None = 1) -> passnat.Router:
    return passnat.Router(passnat.parse_config(base + extra), seed=seed)


def verify(packet: bytes) -> IP:
    """Re-parse an emitted packet with scapy and check every checksum in it."""
    ip = IP(packet)
    assert len(packet) == ip.len, "IPv4 total length does not match the packet"
    fresh = ip.copy()
    fresh.chksum = None
    for layer in (TCP, UDP, ICMP):
        if fresh.haslayer(layer) and not _is_quoted(fresh, layer):
            if layer is UDP and ip[UDP].chksum == 0:
                continue  # UDP without checksum stays without (R8)
            if ip.frag == 0 and not ip.flags.MF:
                fresh[layer].chksum = None
    rebuilt = IP(raw(fresh))
    assert rebuilt.chksum == ip.chksum, f"bad IPv4 checksum {ip.chksum:#x} != {rebuilt.chksum:#x}"
    for layer in (TCP, UDP, ICMP):
        if ip.haslayer(layer) and not _is_quoted(ip, layer) and ip.frag == 0 and not ip.flags.MF:
            if layer is UDP and ip[UDP].chksum == 0:
                continue
            assert rebuilt[layer].chksum == ip[layer].chksum, f"bad {layer.__name__} checksum"
    if ip.haslayer(IPerror):
        inner = ip[IPerror]
        copy = IPerror(raw(inner))
        copy.chksum = None
        assert IPerror(raw(copy)).chksum == inner.chksum, "bad quoted IPv4 header checksum"
    return ip


def _is_quoted(ip: IP, layer: type) -> bool:
    """True when ``layer`` only appears inside an ICMP error's quote."""
    first = ip.getlayer(layer)
    return first is not None and first.underlayer is not None and isinstance(first.underlayer, IPerror)


def one(outs: list[Output], interface: str | None = None) -> IP:
    assert len(outs) == 1, f"expected one output, got {outs}"
    if interface is not None:
        assert outs[0].interface == interface
    return verify(outs[0].packet)


def tcp(src: str, dst: str, sport: int, dport: int, flags: str = "A", payload: bytes = b"",
        ttl: int = 64, **kw: object) -> bytes:
    return raw(IP(src=src, dst=dst, ttl=ttl, **kw) / TCP(sport=sport, dport=dport, flags=flags) / payload)


def udp(src: str, dst: str, sport: int, dport: int, payload: bytes = b"x", ttl: int = 64,
        **kw: object) -> bytes:
    return raw(IP(src=src, dst=dst, ttl=ttl, **kw) / UDP(sport=sport, dport=dport) / payload)


def ping(src: str, dst: str, ident: int, seq: int = 1, reply: bool = False, ttl: int = 64) -> bytes:
    return raw(IP(src=src, dst=dst, ttl=ttl) / ICMP(type=0 if reply else 8, id=ident, seq=seq) / b"ping")


def icmp_error(src: str, dst: str, quoted: bytes, type_: int = 3, code: int = 3, mtu: int = 0) -> bytes:
    """An ICMP error from ``src`` to ``dst`` quoting ``quoted`` (header + 8 bytes)."""
    q = IP(quoted)
    quote = raw(q)[: q.ihl * 4 + 8]
    icmp = ICMP(type=type_, code=code, nexthopmtu=mtu) if (type_, code) == (3, 4) else ICMP(type=type_, code=code)
    return raw(IP(src=src, dst=dst) / icmp / quote)


def gre(src: str, dst: str, call_id: int, payload: bytes = b"\xff\x03\xc0\x21", seq: int = 1) -> bytes:
    """Enhanced GRE (PPTP, version 1) carrying ``call_id`` (the receiver's Call ID)."""
    g = GRE_PPTP(seqnum_present=1, call_id=call_id, sequence_number=seq)
    return raw(IP(src=src, dst=dst) / g / payload)


def gre_call_id(packet: bytes) -> int:
    return int(IP(packet)[GRE_PPTP].call_id)


def sessions_of(router: passnat.Router, protocol: str | None = None, now: float = 0.0) -> list[dict]:
    return [s for s in router.sessions(now) if protocol is None or s["protocol"] == protocol]


def counters(router: passnat.Router) -> dict[str, int]:
    return {k: v for k, v in router.counters().items() if v}


def handle_all(router: passnat.Router, items: Iterable[tuple[str, bytes]], now: float) -> list[Output]:
    out: list[Output] = []
    for iface, pkt in items:
        out.extend(router.handle(iface, pkt, now))
    return out
