"""TCP header helpers: flags, checksum and MSS clamping (R24).

``clamp_mss`` works on a SYN in place: it lowers an MSS option larger than the
limit, leaves a smaller one alone, and adds the option when the SYN has none
(SEIL tcp-mss semantics).  It recomputes the TCP checksum and fixes the IPv4
total length and header checksum when the packet grows.
"""
from __future__ import annotations

import struct

from passnat.packet.checksum import checksum, pseudo_sum
from passnat.packet.ipv4 import set_header_checksum

FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10

OPT_END, OPT_NOP, OPT_MSS = 0, 1, 2


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
    """Clamp the MSS of the SYN in ``buf`` to ``limit``; True when the packet changed."""
    off = find_mss(buf, ihl)
    if off is not None:
        if (buf[off] << 8 | buf[off + 1]) <= limit:
            return False
        struct.pack_into("!H", buf, off, limit)
        set_checksum(buf, ihl)
        return True
    doff = (buf[ihl + 12] >> 4) * 4
    if doff + 4 > 60:
        return False  # no room for one more option
    at = ihl + doff
    buf[at:at] = struct.pack("!BBH", OPT_MSS, 4, limit)
    buf[ihl + 12] = ((doff + 4) // 4) << 4 | (buf[ihl + 12] & 0x0F)
    struct.pack_into("!H", buf, 2, len(buf))
    set_header_checksum(buf, ihl)
    set_checksum(buf, ihl)
    return True
