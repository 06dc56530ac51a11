"""IPv4 header access at fixed offsets over one buffer (RFC 791).

No per-layer objects: readers take ``(buf, offset)`` and return ints; writers
modify a ``bytearray`` in place.  ``parse()`` validates a header once for the
slow path and returns a small ``IPv4`` record of offsets and fields.
"""
from __future__ import annotations

import socket
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

from passnat.packet.checksum import checksum

if TYPE_CHECKING:
    from passnat.nat.drops import Drop

PROTO_ICMP = 1
PROTO_IPIP = 4
PROTO_TCP = 6
PROTO_UDP = 17
PROTO_GRE = 47
PROTO_ESP = 50
PROTO_AH = 51

PROTO_NAMES = {
    PROTO_ICMP: "icmp", 2: "igmp", PROTO_IPIP: "ipip", PROTO_TCP: "tcp", PROTO_UDP: "udp",
    41: "ipv6", PROTO_GRE: "gre", PROTO_ESP: "esp", PROTO_AH: "ah", 89: "ospf", 132: "sctp",
}

FLAG_DF = 0x4000
FLAG_MF = 0x2000
OFFSET_MASK = 0x1FFF

HDR = struct.Struct("!BBHHHBBHII")  # ver_ihl tos totlen id frag ttl proto csum src dst
U16 = struct.Struct("!H")
U32 = struct.Struct("!I")


def ntoa(addr: int) -> str:
    return socket.inet_ntoa(addr.to_bytes(4, "big"))


def aton(text: str) -> int:
    return int.from_bytes(socket.inet_aton(text), "big")


def proto_name(proto: int) -> str:
    return PROTO_NAMES.get(proto, str(proto))


@dataclass(slots=True)
class IPv4:
    """A validated IPv4 header: fields plus the offset of the payload (``l4``)."""

    ihl: int  # header length in bytes
    tos: int
    length: int  # total length (the buffer may be longer: link padding)
    ident: int
    frag: int  # flags and fragment offset, as on the wire
    ttl: int
    proto: int
    src: int
    dst: int

    @property
    def l4(self) -> int:
        return self.ihl

    @property
    def offset(self) -> int:
        """Fragment offset in bytes."""
        return (self.frag & OFFSET_MASK) * 8

    @property
    def more_fragments(self) -> bool:
        return bool(self.frag & FLAG_MF)

    @property
    def is_fragment(self) -> bool:
        return bool(self.frag & (FLAG_MF | OFFSET_MASK))

    @property
    def df(self) -> bool:
        return bool(self.frag & FLAG_DF)


class HeaderError(Exception):
    """Internal: a malformed header; the router turns it into a counted drop."""

    def __init__(self, reason: Drop):
        super().__init__(str(reason))
        self.reason = reason


def parse(buf: bytes | bytearray, *, verify_checksum: bool = True) -> IPv4:
    """Validate the IPv4 header at the start of ``buf`` (raises ``HeaderError``)."""
    from passnat.nat.drops import Drop

    if len(buf) < 20:
        raise HeaderError(Drop.TRUNCATED)
    vihl, tos, length, ident, frag, ttl, proto, _csum, src, dst = HDR.unpack_from(buf, 0)
    if vihl >> 4 != 4:
        raise HeaderError(Drop.NOT_IPV4)
    ihl = (vihl & 0x0F) * 4
    if ihl < 20 or length < ihl or len(buf) < length:
        raise HeaderError(Drop.BAD_HEADER if len(buf) >= ihl else Drop.TRUNCATED)
    if verify_checksum and checksum(buf, 0, ihl) != 0:
        raise HeaderError(Drop.BAD_CHECKSUM)
    return IPv4(ihl, tos, length, ident, frag, ttl, proto, src, dst)


#: IPv4 options (RFC 791): end of list, no-operation, loose and strict source route
OPT_EOL, OPT_NOP, OPT_LSRR, OPT_SSRR = 0, 1, 131, 137


def check_options(buf: bytes | bytearray, ihl: int) -> Drop | None:
    """Why the options of the IPv4 header in ``buf`` (``ihl`` bytes) make it undeliverable, or None.

    LSRR and SSRR are dropped (RFC 7126 sections 4.3/4.4: source routing lets a sender steer
    packets around filters); an option whose length byte is missing, below 2 or past the end
    of the header is malformed (the Linux stack drops those too); every other option passes
    unchanged (a router need not act on record-route or timestamp options).  Nothing is read past ``ihl``."""
    from passnat.nat.drops import Drop

    i = 20
    while i < ihl:
        kind = buf[i]
        if kind == OPT_EOL:
            return None
        if kind == OPT_NOP:
            i += 1
            continue
        if i + 1 >= ihl:
            return Drop.BAD_OPTIONS
        length = buf[i + 1]
        if length < 2 or i + length > ihl:
            return Drop.BAD_OPTIONS
        if kind in (OPT_LSRR, OPT_SSRR):
            return Drop.SOURCE_ROUTE
        i += length
    return None


def set_header_checksum(buf: bytearray, ihl: int = 20, start: int = 0) -> None:
    """Recompute the header checksum of the IPv4 header at ``start``."""
    buf[start + 10:start + 12] = b"\x00\x00"
    U16.pack_into(buf, start + 10, checksum(buf, start, start + ihl))


def build_header(*, src: int, dst: int, proto: int, payload_len: int, ttl: int = 64,
                 ident: int = 0, tos: int = 0, frag: int = 0) -> bytearray:
    """A fresh 20-byte IPv4 header with a correct checksum."""
    hdr = bytearray(HDR.pack(0x45, tos, 20 + payload_len, ident, frag, ttl, proto, 0, src, dst))
    set_header_checksum(hdr)
    return hdr
