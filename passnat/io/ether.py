"""Ethernet II and ARP (RFC 826) wire formats: parse and build, no I/O.

Invariants:
  * MAC addresses are 6-byte ``bytes``; IPv4 addresses in ARP are ints.
  * ``parse_arp`` returns None for anything that is not an Ethernet/IPv4 ARP
    request or reply (it never raises on bad input).
  * Built frames are at least 60 bytes (the Ethernet minimum without FCS).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

ETH_P_IP = 0x0800
ETH_P_ARP = 0x0806
ETH_HLEN = 14
ETH_ZLEN = 60  # minimum frame length without the FCS
BROADCAST = b"\xff" * 6
ZERO_MAC = b"\x00" * 6

ARP_REQUEST = 1
ARP_REPLY = 2

_ARP = struct.Struct("!HHBBH6sI6sI")  # htype ptype hlen plen oper sha spa tha tpa
_ARP_PREFIX = b"\x00\x01\x08\x00\x06\x04"  # Ethernet, IPv4, hlen 6, plen 4


@dataclass(frozen=True, slots=True)
class Arp:
    """One ARP packet (Ethernet hardware, IPv4 protocol)."""

    op: int
    sender_mac: bytes
    sender_ip: int
    target_mac: bytes
    target_ip: int


def mac_text(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


def mac_bytes(text: str) -> bytes:
    parts = text.split(":")
    if len(parts) != 6:
        raise ValueError(f"not a MAC address: {text!r}")
    return bytes(int(p, 16) for p in parts)


def eth_header(dst: bytes, src: bytes, ethertype: int) -> bytes:
    return dst + src + ethertype.to_bytes(2, "big")


def parse_arp(payload: bytes | bytearray | memoryview) -> Arp | None:
    """The ARP packet in ``payload`` (after the Ethernet header), or None."""
    if len(payload) < _ARP.size or bytes(payload[:6]) != _ARP_PREFIX:
        return None
    _h, _p, _hl, _pl, op, sha, spa, tha, tpa = _ARP.unpack_from(payload, 0)
    if op not in (ARP_REQUEST, ARP_REPLY):
        return None
    return Arp(op, sha, spa, tha, tpa)


def build_arp_frame(*, op: int, src_mac: bytes, sender_ip: int, target_mac: bytes, target_ip: int,
                    dst_mac: bytes | None = None) -> bytes:
    """A complete Ethernet frame carrying an ARP packet, padded to 60 bytes.

    ``dst_mac`` defaults to broadcast for requests and to ``target_mac`` for replies.
    """
    if dst_mac is None:
        dst_mac = BROADCAST if op == ARP_REQUEST else target_mac
    body = _ARP.pack(1, ETH_P_IP, 6, 4, op, src_mac, sender_ip, target_mac, target_ip)
    frame = eth_header(dst_mac, src_mac, ETH_P_ARP) + body
    return frame + b"\x00" * (ETH_ZLEN - len(frame))


def gratuitous_arp(src_mac: bytes, ip: int) -> bytes:
    """A gratuitous ARP request announcing ``ip`` at ``src_mac`` (RFC 5227 §3 announcement)."""
    return build_arp_frame(op=ARP_REQUEST, src_mac=src_mac, sender_ip=ip, target_mac=ZERO_MAC,
                           target_ip=ip)
