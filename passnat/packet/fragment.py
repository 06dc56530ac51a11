"""IPv4 fragmentation by the router (RFC 791 §3.2, R23).

``fragment(buf, mtu)`` splits a datagram whose DF bit is clear into fragments
no larger than ``mtu``: payload sizes are multiples of 8 except the last,
offsets continue those of an already fragmented datagram, MF is set on all
but the last (which keeps the original MF), and only options with the
"copied" flag are repeated after the first fragment.  Header checksums are
recomputed.
"""
from __future__ import annotations

import struct

from passnat.packet.ipv4 import FLAG_DF, FLAG_MF, OFFSET_MASK, set_header_checksum


def copied_options(options: bytes) -> bytes:
    """The options a later fragment carries (RFC 791: the copied flag, bit 0x80)."""
    out = bytearray()
    i = 0
    while i < len(options):
        kind = options[i]
        if kind == 0:
            break
        if kind == 1:
            i += 1
            continue
        if i + 1 >= len(options) or options[i + 1] < 2:
            break
        length = options[i + 1]
        if kind & 0x80:
            out += options[i:i + length]
        i += length
    while len(out) % 4:
        out.append(0)
    return bytes(out)


def fragment(buf: bytes | bytearray, mtu: int) -> list[bytes] | None:
    """Fragments of ``buf`` fitting ``mtu``; None when DF is set or ``mtu`` is too small."""
    ihl = (buf[0] & 0x0F) * 4
    total = (buf[2] << 8) | buf[3]
    frag = (buf[6] << 8) | buf[7]
    if frag & FLAG_DF:
        return None
    first_hdr = bytes(buf[:ihl])
    later_hdr = first_hdr[:20] + copied_options(first_hdr[20:ihl])
    payload = bytes(buf[ihl:total])
    base = frag & OFFSET_MASK
    last_mf = frag & FLAG_MF
    out: list[bytes] = []
    pos = 0
    hdr = first_hdr
    while pos < len(payload):
        room = (mtu - len(hdr)) & ~7
        if room <= 0:
            return None
        chunk = payload[pos:pos + room]
        more = pos + len(chunk) < len(payload)
        f = bytearray(hdr + chunk)
        f[0] = 0x40 | (len(hdr) // 4)
        struct.pack_into("!H", f, 2, len(f))
        flags = (frag & ~(OFFSET_MASK | FLAG_MF)) | (FLAG_MF if more or last_mf else 0)
        struct.pack_into("!H", f, 6, flags | (base + pos // 8))
        set_header_checksum(f, len(hdr))
        out.append(bytes(f))
        pos += len(chunk)
        hdr = later_hdr
    return out
