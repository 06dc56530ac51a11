"""Undo what virtual links do to frames before the engine sees them: pure functions.

On veth, tap and similar links a peer with checksum offload hands over TCP/UDP
packets whose L4 checksum is only *partial* (the kernel marks them
``TP_STATUS_CSUMNOTREADY``; the field holds the pseudo-header sum), and a peer
with TSO/GSO hands over *super-frames*: one TCP (or UDP with USO) packet of up
to 64 KiB that a NIC would have cut into MTU-sized segments.  A physical wire
never carries either.  The engine rewrites checksums incrementally and
forwards what it gets, so the daemon first

  * ``complete_checksum``: computes the full L4 checksum of a partial packet;
  * ``segment``: cuts a super-frame into wire-sized packets (RFC 793 sequence
    numbers; flags as Linux's ``tcp_gso_segment``: CWR on the first segment
    only, FIN and PSH on the last only; IPv4 ids incremented per segment),
    each with full checksums.

The segment size comes from the ``virtio_net_hdr`` the kernel writes in front
of each frame (``PACKET_VNET_HDR``), parsed by ``parse_vnet``.

The other way round, ``to_partial`` hands a checksum back to the kernel: it
sets the L4 field of an outgoing TCP/UDP packet to its pseudo-header sum and
returns the ``virtio_net_hdr`` that asks the kernel (or the NIC) to compute
the rest, exactly what the sender asked of us.  The daemon uses it for packets
that arrived with a partial checksum, so Python never sums their payload.

Invariants: inputs are IPv4 packets (no link header); nothing here raises on
malformed input, it returns None and the caller counts a drop.
"""
from __future__ import annotations

import mmap
import struct
from collections.abc import Callable
from dataclasses import dataclass

from passnat.packet.checksum import checksum, pseudo_sum

VNET_HDR_LEN = 10
VNET_F_NEEDS_CSUM = 1
GSO_NONE = 0
GSO_TCPV4 = 1
GSO_UDP = 3  # UFO: IP fragmentation offload (not produced by current kernels)
GSO_TCPV6 = 4
GSO_UDP_L4 = 5  # USO: UDP segmentation (UDP_SEGMENT)
GSO_ECN = 0x80

VNET = struct.Struct("<BBHHHH")  # host order (little-endian hosts; vio_le)

_H = struct.Struct("!H")
_I = struct.Struct("!I")
_II = struct.Struct("!II")

#: the virtio_net_hdr of a frame that needs nothing from the kernel
VNET_NONE = bytes(VNET_HDR_LEN)
#: (first IPv4 byte << 8 | protocol) -> (header length, checksum field offset, the
#: virtio_net_hdr asking the kernel to finish the L4 checksum), for TCP and UDP
PARTIAL_TX = {(0x40 | ihl // 4) << 8 | proto:
              (ihl, ihl + (16 if proto == 6 else 6),
               VNET.pack(VNET_F_NEEDS_CSUM, GSO_NONE, 0, 0, 14 + ihl, 16 if proto == 6 else 6))
              for ihl in range(20, 64, 4) for proto in (6, 17)}
#: struct reading the four 16-bit words of the two IPv4 addresses (pseudo-header sum)
ADDR_WORDS = struct.Struct("!4H")

_TCP_FIN, _TCP_PSH, _TCP_CWR = 0x01, 0x08, 0x80


@dataclass(frozen=True, slots=True)
class VnetHdr:
    flags: int
    gso_type: int  # without the ECN bit
    gso_size: int
    csum_start: int
    csum_offset: int


def parse_vnet(buf: bytes | bytearray | memoryview | mmap.mmap, offset: int) -> VnetHdr:
    flags, gso_type, _hdr_len, gso_size, csum_start, csum_offset = VNET.unpack_from(buf, offset)
    return VnetHdr(flags, gso_type & ~GSO_ECN, gso_size, csum_start, csum_offset)


def complete_partial(pkt: bytes, start: int, offset: int) -> bytes:
    """Finish a partial checksum as the NIC would: the one's complement of the sum from
    ``start`` to the end, stored at ``start + offset`` (``virtio_net_hdr`` csum_start and
    csum_offset, made relative to the IPv4 header).  The field holds the pseudo-header
    sum already, so no pseudo-header is computed here.  The caller checks that the
    field lies inside ``pkt``."""
    seg = pkt[start:]
    s = int.from_bytes(seg + b"\0" if len(seg) & 1 else seg, "big")
    r = s % 0xFFFF  # 2**16 == 1 (mod 0xFFFF): the folded one's complement sum (RFC 1071)
    c = ~(r if r or not s else 0xFFFF) & 0xFFFF
    if not c and pkt[9] == 17:
        c = 0xFFFF  # RFC 768: a computed zero is sent as all ones
    at = start + offset
    return pkt[:at] + c.to_bytes(2, "big") + pkt[at + 2:]


def to_partial(pkt: bytes) -> tuple[bytes, bytes] | None:
    """(virtio_net_hdr, packet with its L4 checksum field = the pseudo-header sum) for an
    unfragmented TCP/UDP packet, the kernel to finish the checksum; None otherwise.
    (The daemon's send path does the same inline.)"""
    if pkt[6] & 0x3F or pkt[7]:
        return None
    entry = PARTIAL_TX.get(pkt[0] << 8 | pkt[9])
    if entry is None or entry[1] + 2 > len(pkt):
        return None
    ihl, co, vnet = entry
    s = sum(ADDR_WORDS.unpack_from(pkt, 12)) + pkt[9] + len(pkt) - ihl
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    return vnet, pkt[:co] + _H.pack(s) + pkt[co + 2:]


def _l4_bounds(pkt: bytes | bytearray) -> tuple[int, int, int] | None:
    """(ihl, total length, protocol) of an unfragmented TCP/UDP packet, else None."""
    if len(pkt) < 20 or pkt[0] >> 4 != 4:
        return None
    ihl = (pkt[0] & 15) * 4
    total = pkt[2] << 8 | pkt[3]
    proto = pkt[9]
    if ihl < 20 or total < ihl or total > len(pkt) or pkt[6] & 0x3F or pkt[7]:
        return None
    if proto == 6 and total - ihl >= 20 or proto == 17 and total - ihl >= 8:
        return ihl, total, proto
    return None


def complete_checksum(pkt: bytes) -> bytes | None:
    """``pkt`` with its TCP/UDP checksum computed in full (None: not TCP/UDP or malformed).

    Other protocols are returned unchanged: the kernel only leaves TCP and UDP
    checksums partial on IPv4.
    """
    if len(pkt) >= 10 and pkt[9] not in (6, 17):
        return pkt
    b = _l4_bounds(pkt)
    if b is None:
        return None
    ihl, total, proto = b
    buf = bytearray(pkt[:total])
    _set_l4_checksum(buf, ihl, total, proto)
    return bytes(buf)


def _set_l4_checksum(buf: bytearray, ihl: int, total: int, proto: int) -> None:
    co = ihl + (16 if proto == 6 else 6)
    buf[co] = buf[co + 1] = 0
    src, dst = _I.unpack_from(buf, 12)[0], _I.unpack_from(buf, 16)[0]
    c = checksum(buf, ihl, total, pseudo_sum(src, dst, proto, total - ihl))
    if c == 0 and proto == 17:
        c = 0xFFFF  # RFC 768: a computed zero is sent as all ones
    _H.pack_into(buf, co, c)


def _set_ip_checksum(buf: bytearray, ihl: int) -> None:
    buf[10] = buf[11] = 0
    _H.pack_into(buf, 10, checksum(buf, 0, ihl))


def _set_pseudo(buf: bytearray, ihl: int, total: int, proto: int) -> None:
    """Leave the L4 checksum partial: the field holds the pseudo-header sum (CHECKSUM_PARTIAL)."""
    src, dst = _II.unpack_from(buf, 12)
    _H.pack_into(buf, ihl + (16 if proto == 6 else 6), pseudo_sum(src, dst, proto, total - ihl))


def segment(pkt: bytes, gso_type: int, gso_size: int, *, partial: bool = False) -> list[bytes] | None:
    """Cut a TCP (``GSO_TCPV4``) or UDP (``GSO_UDP_L4``) super-frame into packets of
    ``gso_size`` payload bytes each; None when it cannot be segmented.  ``partial``:
    leave each L4 checksum partial (for ``to_partial`` on send) instead of computing it."""
    b = _l4_bounds(pkt)
    if b is None or gso_size <= 0:
        return None
    ihl, total, proto = b
    l4sum = _set_pseudo if partial else _set_l4_checksum
    if gso_type == GSO_TCPV4 and proto == 6:
        return _segment_tcp(pkt, ihl, total, gso_size, l4sum)
    if gso_type == GSO_UDP_L4 and proto == 17:
        return _segment_udp(pkt, ihl, total, gso_size, l4sum)
    return None


def _segment_tcp(pkt: bytes, ihl: int, total: int, mss: int,
                 l4sum: Callable[[bytearray, int, int, int], None]) -> list[bytes] | None:
    doff = (pkt[ihl + 12] >> 4) * 4
    hl = ihl + doff
    if doff < 20 or hl > total:
        return None
    header = pkt[:hl]
    seq0 = _I.unpack_from(pkt, ihl + 4)[0]
    ident0 = _H.unpack_from(pkt, 4)[0]
    flags = pkt[ihl + 13]
    out: list[bytes] = []
    starts = range(hl, total, mss) if total > hl else range(hl, hl + 1)
    last = len(starts) - 1
    for i, start in enumerate(starts):
        chunk = pkt[start:min(start + mss, total)]
        buf = bytearray(header)
        buf += chunk
        _H.pack_into(buf, 2, hl + len(chunk))
        _H.pack_into(buf, 4, (ident0 + i) & 0xFFFF)
        _I.pack_into(buf, ihl + 4, (seq0 + i * mss) & 0xFFFFFFFF)
        f = flags
        if i:
            f &= ~_TCP_CWR
        if i != last:
            f &= ~(_TCP_FIN | _TCP_PSH)
        buf[ihl + 13] = f
        _set_ip_checksum(buf, ihl)
        l4sum(buf, ihl, len(buf), 6)
        out.append(bytes(buf))
    return out


def _segment_udp(pkt: bytes, ihl: int, total: int, size: int,
                 l4sum: Callable[[bytearray, int, int, int], None]) -> list[bytes] | None:
    hl = ihl + 8
    header = pkt[:hl]
    ident0 = _H.unpack_from(pkt, 4)[0]
    had_checksum = pkt[ihl + 6] or pkt[ihl + 7]
    out: list[bytes] = []
    for i, start in enumerate(range(hl, total, size)):
        chunk = pkt[start:min(start + size, total)]
        buf = bytearray(header)
        buf += chunk
        _H.pack_into(buf, 2, hl + len(chunk))
        _H.pack_into(buf, 4, (ident0 + i) & 0xFFFF)
        _H.pack_into(buf, ihl + 4, 8 + len(chunk))
        _set_ip_checksum(buf, ihl)
        if had_checksum:
            l4sum(buf, ihl, len(buf), 17)
        out.append(bytes(buf))
    return out or None
