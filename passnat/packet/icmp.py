"""ICMP (RFC 792): types, building the router's own messages, and quoted headers.

``build_error`` makes the ICMP errors a router sends (RFC 1812 §4.3.2.3: quote
as much of the offending datagram as fits in 576 bytes); ``error_allowed``
says when an error must not be sent (RFC 1812 §4.3.2.7).
"""
from __future__ import annotations

import struct

from passnat.packet.checksum import checksum
from passnat.packet.ipv4 import OFFSET_MASK, PROTO_ICMP, build_header

ECHO_REPLY = 0
DEST_UNREACH = 3
SOURCE_QUENCH = 4
REDIRECT = 5
ECHO_REQUEST = 8
TIME_EXCEEDED = 11
PARAM_PROBLEM = 12
TIMESTAMP = 13
TIMESTAMP_REPLY = 14
INFO_REQUEST = 15
INFO_REPLY = 16
MASK_REQUEST = 17
MASK_REPLY = 18

ERROR_TYPES = frozenset((DEST_UNREACH, SOURCE_QUENCH, REDIRECT, TIME_EXCEEDED, PARAM_PROBLEM))
#: query request type -> reply type (RFC 5508 query sessions use the identifier like a port)
QUERY_REQUESTS = {ECHO_REQUEST: ECHO_REPLY, TIMESTAMP: TIMESTAMP_REPLY, INFO_REQUEST: INFO_REPLY,
                  MASK_REQUEST: MASK_REPLY}
QUERY_REPLIES = {v: k for k, v in QUERY_REQUESTS.items()}

# destination unreachable codes
NET_UNREACH = 0
HOST_UNREACH = 1
PROTO_UNREACH = 2
PORT_UNREACH = 3
FRAG_NEEDED = 4
ADMIN_PROHIBITED = 13

MAX_ERROR_DATAGRAM = 576

_HDR = struct.Struct("!BBHHH")


def error_allowed(orig: bytes) -> bool:
    """False when RFC 1812 forbids an ICMP error about ``orig``."""
    if len(orig) < 20:
        return False
    frag = (orig[6] << 8) | orig[7]
    if frag & OFFSET_MASK:
        return False  # only about the first fragment
    src = int.from_bytes(orig[12:16], "big")
    if src == 0 or src == 0xFFFFFFFF or src >> 28 == 0xE or src >> 24 == 127:
        return False
    ihl = (orig[0] & 0x0F) * 4
    # never an error about an error
    return not (orig[9] == PROTO_ICMP and len(orig) > ihl and orig[ihl] in ERROR_TYPES)


def build_error(*, src: int, orig: bytes, icmp_type: int, code: int, mtu: int = 0,
                ttl: int = 64) -> bytes:
    """An ICMP error datagram from ``src`` to the sender of ``orig``, quoting it."""
    dst = int.from_bytes(orig[12:16], "big")
    quote = orig[:MAX_ERROR_DATAGRAM - 28]
    rest = mtu & 0xFFFF if icmp_type == DEST_UNREACH and code == FRAG_NEEDED else 0
    body = bytearray(_HDR.pack(icmp_type, code, 0, 0, rest)) + quote
    struct.pack_into("!H", body, 2, checksum(body))
    hdr = build_header(src=src, dst=dst, proto=PROTO_ICMP, payload_len=len(body), ttl=ttl)
    return bytes(hdr + body)


def build_echo_reply(request: bytes | bytearray, ihl: int) -> bytes:
    """The echo reply to an echo request addressed to the router (same id, seq, data)."""
    total = (request[2] << 8) | request[3]
    body = bytearray(request[ihl:total])
    body[0] = ECHO_REPLY
    body[2:4] = b"\x00\x00"
    struct.pack_into("!H", body, 2, checksum(body))
    src = int.from_bytes(request[16:20], "big")
    dst = int.from_bytes(request[12:16], "big")
    hdr = build_header(src=src, dst=dst, proto=PROTO_ICMP, payload_len=len(body))
    return bytes(hdr + body)
