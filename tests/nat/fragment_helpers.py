"""Test helpers for fragments and MTU: split datagrams with scapy, check and reassemble outputs.

``split`` cuts a datagram into fragments with scapy; ``reassemble`` puts
emitted fragments back together after checking every one of them (IPv4
header checksum, total length, offsets, MF bits, no gaps or overlaps) and
returns the datagram, whose transport checksum ``helpers.verify`` then checks.
"""
from __future__ import annotations

import struct

from scapy.all import IP, fragment, raw  # type: ignore[attr-defined]

from passnat import Output
from passnat.packet.checksum import checksum


def split(packet: bytes, size: int) -> list[bytes]:
    """``packet`` cut by scapy into fragments of ``size`` payload bytes (a multiple of 8)."""
    return [raw(f) for f in fragment(IP(packet), fragsize=size)]


def check_fragment(f: bytes) -> tuple[int, int, bool]:
    """Check one emitted IPv4 packet; returns (offset in bytes, payload length, MF)."""
    assert f[0] >> 4 == 4
    ihl = (f[0] & 0x0F) * 4
    total = struct.unpack_from("!H", f, 2)[0]
    assert total == len(f), "total length does not match the packet"
    assert checksum(f, 0, ihl) == 0, "bad IPv4 header checksum"
    frag = struct.unpack_from("!H", f, 6)[0]
    return (frag & 0x1FFF) * 8, total - ihl, bool(frag & 0x2000)


def reassemble(fragments: list[bytes]) -> bytes:
    """The datagram ``fragments`` (in any order) make, after checking each and their fit."""
    assert fragments, "no fragments"
    keys = {(f[4:6], f[9], f[12:20]) for f in fragments}
    assert len(keys) == 1, f"fragments of different datagrams: {keys}"
    pieces = []
    for f in fragments:
        off, length, mf = check_fragment(f)
        pieces.append((off, length, mf, f))
    pieces.sort(key=lambda p: p[0])
    pos = 0
    for off, length, _mf, _ in pieces:
        assert off == pos, f"gap or overlap at {pos} (next fragment at {off})"
        pos += length
    assert all(p[2] for p in pieces[:-1]), "MF clear before the last fragment"
    assert not pieces[-1][2], "MF set on the last fragment"
    first = pieces[0][3]
    ihl = (first[0] & 0x0F) * 4
    payload = b"".join(f[(f[0] & 0x0F) * 4:] for _, _, _, f in pieces)
    hdr = bytearray(first[:ihl])
    struct.pack_into("!H", hdr, 2, ihl + len(payload))
    struct.pack_into("!H", hdr, 6, struct.unpack_from("!H", hdr, 6)[0] & 0x4000)
    hdr[10:12] = b"\0\0"
    struct.pack_into("!H", hdr, 10, checksum(hdr))
    return bytes(hdr) + payload


def offsets(outs: list[Output]) -> list[int]:
    return [check_fragment(o.packet)[0] for o in outs]
