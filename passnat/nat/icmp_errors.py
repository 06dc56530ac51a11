"""ICMP error translation (RFC 5508 §4.2, RFC 3022 §4.3) and address-only rewrites.

An ICMP error about a translated flow quotes the packet as the far side saw
it.  Translating it back means: the outer address, the quoted IP header's
address (and port or query id), the quoted header's checksum, the quoted
transport checksum when the quote holds it, and the ICMP checksum.  The
session is found from the quoted header read in reverse; processing an error
never refreshes or removes that session (RFC 5508 REQ-5).

``Quoted`` reads the embedded header; ``translate_error`` rewrites it;
``rewrite_address`` is the address-only translation of static and dynamic NAT
(every protocol, including the quote inside an ICMP error).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from passnat.nat.drops import Drop
from passnat.nat.handlers.base import Pkt
from passnat.packet import icmp as icmpmod
from passnat.packet.checksum import apply_delta, checksum, delta16, delta32, fold
from passnat.packet.ipv4 import PROTO_GRE, PROTO_ICMP, PROTO_TCP, PROTO_UDP, set_header_checksum

_H = struct.Struct("!H")
_I = struct.Struct("!I")


@dataclass(slots=True)
class Quoted:
    """The IPv4 header (and first transport bytes) quoted in an ICMP error."""

    off: int  # offset of the quoted IP header in the packet
    ihl: int
    proto: int
    src: int
    dst: int
    sport: int  # TCP/UDP ports; ICMP query id in both; GRE: call id in ``dport``
    dport: int
    spi: int  # ESP
    is_query: bool  # quoted ICMP query

    @property
    def l4(self) -> int:
        return self.off + self.ihl


def quoted(pkt: Pkt) -> Quoted | Drop:
    """The header an ICMP error quotes (RFC 5508 REQ-3: its header checksum must verify)."""
    buf = pkt.buf
    off = pkt.ip.ihl + 8
    if len(buf) < off + 20:
        return Drop.ICMP_ERROR_BAD
    if buf[off] >> 4 != 4:
        return Drop.ICMP_ERROR_BAD
    ihl = (buf[off] & 0x0F) * 4
    if ihl < 20 or len(buf) < off + ihl + 4 or checksum(buf, off, off + ihl) != 0:
        return Drop.ICMP_ERROR_BAD
    proto = buf[off + 9]
    src, dst = struct.unpack_from("!II", buf, off + 12)
    l4 = off + ihl
    sport = dport = spi = 0
    is_query = False
    if proto in (PROTO_TCP, PROTO_UDP):
        sport, dport = struct.unpack_from("!HH", buf, l4)
    elif proto == PROTO_ICMP:
        if len(buf) < l4 + 8:
            return Drop.ICMP_ERROR_BAD
        t = buf[l4]
        if t in icmpmod.QUERY_REQUESTS or t in icmpmod.QUERY_REPLIES:
            is_query = True
            sport = dport = (buf[l4 + 4] << 8) | buf[l4 + 5]
    elif proto == 50:
        spi = _I.unpack_from(buf, l4)[0]
    elif proto == PROTO_GRE and len(buf) >= l4 + 8 and buf[l4] & 0x20 and buf[l4 + 1] & 0x07 == 1:
        dport = _H.unpack_from(buf, l4 + 6)[0]  # enhanced GRE: Call ID of the receiver
    return Quoted(off, ihl, proto, src, dst, sport, dport, spi, is_query)


def translate_error(pkt: Pkt, q: Quoted, *, outbound: bool, addr: int, port: int | None) -> None:
    """Rewrite an ICMP error so it matches the other side of the NAT.

    Inbound (the quote is a packet we sent out): outer destination and quoted
    source become ``addr``, the quoted source port / query id becomes
    ``port``.  Outbound (an inside host's error about a packet we let in):
    outer source and quoted destination become ``addr``, the quoted
    destination port becomes ``port``.
    """
    buf = pkt.buf
    outer_off = 16 if not outbound else 12
    _I.pack_into(buf, outer_off, addr)
    if outbound:
        pkt.ip.src = addr
    else:
        pkt.ip.dst = addr
    in_off = q.off + (12 if not outbound else 16)
    old_addr = _I.unpack_from(buf, in_off)[0]
    _I.pack_into(buf, in_off, addr)
    l4 = q.l4
    if port is not None:
        if q.proto == PROTO_ICMP:
            port_off = l4 + 4
        elif q.proto == PROTO_GRE:
            port_off = l4 + 6
        else:
            port_off = l4 + (0 if not outbound else 2)
        if len(buf) >= port_off + 2:
            old_port = _H.unpack_from(buf, port_off)[0]
            _H.pack_into(buf, port_off, port)
            _fix_quoted_l4(buf, q, l4, delta16(old_port, port), delta32(old_addr, addr))
    else:
        _fix_quoted_l4(buf, q, l4, 0, delta32(old_addr, addr))
    set_header_checksum(buf, q.ihl, q.off)
    _icmp_checksum(pkt)
    set_header_checksum(buf, pkt.ip.ihl)


def _fix_quoted_l4(buf: bytearray, q: Quoted, l4: int, port_delta: int, addr_delta: int) -> None:
    """Update the quoted transport checksum when the quote contains it."""
    if q.proto == PROTO_TCP:
        cs, delta = l4 + 16, fold(port_delta + addr_delta)
    elif q.proto == PROTO_UDP:
        cs, delta = l4 + 6, fold(port_delta + addr_delta)
    elif q.proto == PROTO_ICMP and q.is_query:
        cs, delta = l4 + 2, port_delta
    else:
        return
    if len(buf) < cs + 2:
        return
    old = _H.unpack_from(buf, cs)[0]
    if q.proto == PROTO_UDP and old == 0:
        return
    new = apply_delta(old, delta)
    _H.pack_into(buf, cs, 0xFFFF if (new == 0 and q.proto == PROTO_UDP) else new)


def _icmp_checksum(pkt: Pkt) -> None:
    buf, l4 = pkt.buf, pkt.ip.ihl
    buf[l4 + 2:l4 + 4] = b"\x00\x00"
    _H.pack_into(buf, l4 + 2, checksum(buf, l4))


def rewrite_address(pkt: Pkt, new: int, *, outbound: bool) -> None:
    """Address-only NAT of one packet: source (outbound) or destination (inbound)."""
    buf, ip = pkt.buf, pkt.ip
    off = 12 if outbound else 16
    old = _I.unpack_from(buf, off)[0]
    _I.pack_into(buf, off, new)
    d = delta32(old, new)
    _H.pack_into(buf, 10, apply_delta(_H.unpack_from(buf, 10)[0], d))
    if outbound:
        ip.src = new
    else:
        ip.dst = new
    if ip.frag & 0x1FFF:
        return  # a later fragment has no transport header
    l4 = ip.ihl
    if ip.proto in (PROTO_TCP, PROTO_UDP):
        cs = l4 + (16 if ip.proto == PROTO_TCP else 6)
        if len(buf) >= cs + 2:
            c = _H.unpack_from(buf, cs)[0]
            if not (ip.proto == PROTO_UDP and c == 0):
                c = apply_delta(c, d)
                _H.pack_into(buf, cs, 0xFFFF if (c == 0 and ip.proto == PROTO_UDP) else c)
    elif ip.proto == PROTO_ICMP and pkt.icmp_type in icmpmod.ERROR_TYPES:
        q = quoted(pkt)
        if isinstance(q, Quoted):
            in_off = q.off + (16 if outbound else 12)
            old_in = _I.unpack_from(buf, in_off)[0]
            if old_in == old:
                _I.pack_into(buf, in_off, new)
                _fix_quoted_l4(buf, q, q.l4, 0, delta32(old, new))
                set_header_checksum(buf, q.ihl, q.off)
                _icmp_checksum(pkt)
