"""TCP header helpers: flags, checksum and MSS clamping (R24).

``clamp_mss`` works on a SYN in place: it lowers an MSS option larger than the
limit, leaves a smaller one alone, and adds the option when the SYN has none
(SEIL tcp-mss semantics).  It updates the TCP checksum incrementally, and the
IPv4 total length and header checksum when the packet grows.
"""
from __future__ import annotations

import struct

from passnat.packet.checksum import (
    add_delta,
    apply_delta,
    checksum,
    delta16,
    pseudo_sum,
)
from passnat.packet.ipv4 import PROTO_TCP, build_header

FIN, SYN, RST, PSH, ACK, URG = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20

#: The flag combinations a TCP stack sends, PSH, ECE and CWR aside (the set Linux conntrack
#: accepts): SYN, SYN+URG, SYN+ACK, RST, RST+ACK, FIN+ACK, FIN+ACK+URG, ACK, ACK+URG.  Anything
#: else -- SYN+FIN, SYN+RST, no flags, FIN/PSH/URG without ACK ("Xmas"), a bare FIN -- is a scan
#: or garbage: ``VALID_FLAGS[flags & VALID_FLAGS_MASK]`` is False for it (issue 13, R28).
VALID_FLAGS_MASK = FIN | SYN | RST | ACK | URG
VALID_FLAGS: tuple[bool, ...] = tuple(
    f in (SYN, SYN | URG, SYN | ACK, RST, RST | ACK, FIN | ACK, FIN | ACK | URG, ACK, ACK | URG)
    for f in range(VALID_FLAGS_MASK + 1))

OPT_END, OPT_NOP, OPT_MSS = 0, 1, 2

_U16 = struct.Struct("!H")


def _swap(v: int) -> int:
    return (v & 0xFF) << 8 | v >> 8


def set_checksum(buf: bytearray, ihl: int) -> None:
    """Recompute the TCP checksum of the (unfragmented) segment after the IPv4 header."""
    total = (buf[2] << 8) | buf[3]
    seg_len = total - ihl
    src = int.from_bytes(buf[12:16], "big")
    dst = int.from_bytes(buf[16:20], "big")
    buf[ihl + 16:ihl + 18] = b"\x00\x00"
    struct.pack_into("!H", buf, ihl + 16, checksum(buf, ihl, total, pseudo_sum(src, dst, 6, seg_len)))


def find_mss(buf: bytearray, ihl: int) -> int | None:
    """Offset of the MSS option's value in ``buf``, or None."""
    doff = (buf[ihl + 12] >> 4) * 4
    i, end = ihl + 20, min(ihl + doff, len(buf))
    while i < end:
        kind = buf[i]
        if kind == OPT_END:
            return None
        if kind == OPT_NOP:
            i += 1
            continue
        if i + 1 >= end:
            return None
        length = buf[i + 1]
        if length < 2:
            return None
        if kind == OPT_MSS and length == 4 and i + 4 <= end:
            return i + 2
        i += length
    return None


def clamp_mss(buf: bytearray, ihl: int, limit: int) -> bool:
    """Clamp the MSS of the SYN in ``buf`` to ``limit``; True when the packet changed.

    The TCP checksum (and, when the option is added, the IPv4 total length
    and header checksum) is updated incrementally (RFC 1624), so a segment
    that arrived with a bad checksum still has one.  A missing option is
    inserted first in the option list, where no End-of-Option-List can hide
    it; every later byte moves by 4, which keeps the 16-bit sums unchanged.
    """
    if len(buf) < ihl + 20:
        return False
    doff = (buf[ihl + 12] >> 4) * 4
    if doff < 20 or len(buf) < ihl + doff:
        return False
    cs_off = ihl + 16
    off = find_mss(buf, ihl)
    if off is not None:
        old = buf[off] << 8 | buf[off + 1]
        if old <= limit:
            return False
        struct.pack_into("!H", buf, off, limit)
        if (off - ihl) & 1:  # an option at an odd offset straddles two checksum words: swapped bytes
            old, limit = _swap(old), _swap(limit)
        struct.pack_into("!H", buf, cs_off, apply_delta(_U16.unpack_from(buf, cs_off)[0], delta16(old, limit)))
        return True
    if doff + 4 > 60:
        return False  # no room for one more option
    total = (buf[2] << 8) | buf[3]
    old_word = _U16.unpack_from(buf, ihl + 12)[0]
    new_word = ((doff + 4) // 4) << 12 | (old_word & 0x0FFF)
    seg = total - ihl
    delta = add_delta(delta16(old_word, new_word), OPT_MSS << 8 | 4, limit, delta16(seg, seg + 4))
    at = ihl + 20
    buf[at:at] = struct.pack("!BBH", OPT_MSS, 4, limit)
    _U16.pack_into(buf, ihl + 12, new_word)
    _U16.pack_into(buf, cs_off, apply_delta(_U16.unpack_from(buf, cs_off)[0], delta))
    _U16.pack_into(buf, 2, total + 4)
    _U16.pack_into(buf, 10, apply_delta(_U16.unpack_from(buf, 10)[0], delta16(total, total + 4)))
    return True


def build_rst(orig: bytes | bytearray, ihl: int) -> bytes | None:
    """The RST a closed port answers ``orig`` (an IPv4 TCP segment) with, or None.

    RFC 9293 §3.10.7.1 (CLOSED): nothing for a RST; a segment with ACK gets
    ``<SEQ=SEG.ACK><CTL=RST>``; one without gets
    ``<SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>`` (SYN and FIN count in SEG.LEN).
    The answer goes from the segment's destination to its source.
    """
    total = min(len(orig), (orig[2] << 8) | orig[3])
    if total < ihl + 20:
        return None
    sport, dport, seq, ack = struct.unpack_from("!HHII", orig, ihl)
    flags = orig[ihl + 13]
    if flags & RST:
        return None
    if flags & ACK:
        out_seq, out_ack, out_flags = ack, 0, RST
    else:
        seg_len = total - ihl - (orig[ihl + 12] >> 4) * 4
        seg_len += (1 if flags & SYN else 0) + (1 if flags & FIN else 0)
        out_seq, out_ack, out_flags = 0, (seq + seg_len) & 0xFFFFFFFF, RST | ACK
    src = int.from_bytes(orig[16:20], "big")
    dst = int.from_bytes(orig[12:16], "big")
    seg = bytearray(struct.pack("!HHIIBBHHH", dport, sport, out_seq, out_ack, 5 << 4, out_flags, 0, 0, 0))
    _U16.pack_into(seg, 16, checksum(seg, 0, 20, pseudo_sum(src, dst, 6, 20)))
    return bytes(build_header(src=src, dst=dst, proto=PROTO_TCP, payload_len=20) + seg)
