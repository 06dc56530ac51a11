"""Test helpers: VPN packets (IKE, NAT-T, ESP) and a PPTP call through the router.

``pptp_call`` opens a PPTP control connection and one outgoing call between
a PNS and a PAC on either side of the router, checking every step, and
returns the Call IDs each side sees, so that tests can send enhanced GRE.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from scapy.all import IP, TCP, UDP, Raw, raw  # type: ignore[attr-defined]

import passnat
from tests.nat.helpers import one

PPTP_PORT = 1723


def ike(src: str, dst: str, sport: int = 500, dport: int = 500, size: int = 64) -> bytes:
    body = b"\x11" * 8 + b"\0" * 8 + bytes([33, 0x20, 34, 0x08]) + b"\0" * 4 + struct.pack("!I", 28 + size)
    return raw(IP(src=src, dst=dst) / UDP(sport=sport, dport=dport) / Raw(body + b"\0" * size))


def nat_t(src: str, dst: str, spi: int, sport: int = 4500, dport: int = 4500) -> bytes:
    """UDP-encapsulated ESP (RFC 3948): a non-zero SPI first."""
    return raw(IP(src=src, dst=dst) / UDP(sport=sport, dport=dport) / Raw(struct.pack("!II", spi, 1) + b"e" * 48))


def esp(src: str, dst: str, spi: int, seq: int = 1) -> bytes:
    return raw(IP(src=src, dst=dst, proto=50) / Raw(struct.pack("!II", spi, seq) + b"e" * 48))


def control_message(ctype: int, length: int, fields: dict[int, int]) -> bytes:
    """A PPTP control message (RFC 2637 §2) with 16-bit ``fields`` at their offsets."""
    b = bytearray(length)
    struct.pack_into("!HHIHH", b, 0, length, 1, 0x1A2B3C4D, ctype, 0)
    for off, val in fields.items():
        struct.pack_into("!H", b, off, val)
    return bytes(b)


@dataclass
class Call:
    pns_id: int  # the PNS's Call ID as the PAC sees it
    pac_id: int  # the PAC's Call ID as the PNS sees it
    pns_inside_id: int
    pac_inside_id: int


def pptp_call(r: passnat.Router, *, pns: tuple[str, str], pac: tuple[str, str], pns_addr_seen: str,
              pac_addr_seen: str, pns_id: int = 0x1234, pac_id: int = 0x0777, sport: int = 4000,
              now: float = 0.0) -> Call:
    """Open a control connection and an outgoing call PNS -> PAC; every step must pass.

    ``pns``/``pac`` are (interface the party sits behind, its address);
    ``pac_addr_seen`` is where the PNS sends to, ``pns_addr_seen`` where the
    PAC's replies go (the other side's view across the NAT).
    """
    pns_if, pns_ip = pns
    pac_if, pac_ip = pac

    def seg(frm: str, src: str, dst: str, sp: int, dp: int, flags: str, seq: int, ack: int,
            data: bytes = b"") -> IP:
        pkt = raw(IP(src=src, dst=dst) / TCP(sport=sp, dport=dp, flags=flags, seq=seq, ack=ack) / data)
        return one(r.handle(frm, pkt, now))

    syn = seg(pns_if, pns_ip, pac_addr_seen, sport, PPTP_PORT, "S", 1000, 0)
    seen_port = int(syn[TCP].sport)  # the PNS's port as the PAC sees it
    seg(pac_if, pac_ip, pns_addr_seen, PPTP_PORT, seen_port, "SA", 5000, 1001)
    ocrq = seg(pns_if, pns_ip, pac_addr_seen, sport, PPTP_PORT, "PA", 1001, 5001,
               control_message(7, 168, {12: pns_id, 14: 1}))
    pns_seen = struct.unpack_from("!H", bytes(ocrq[TCP].payload), 12)[0]
    ocrp = seg(pac_if, pac_ip, pns_addr_seen, PPTP_PORT, seen_port, "PA", 5001, 1169,
               control_message(8, 32, {12: pac_id, 14: pns_seen, 16: 0x0100}))
    pac_seen, peer = struct.unpack_from("!HH", bytes(ocrp[TCP].payload), 12)
    assert peer == pns_id
    return Call(pns_id=int(pns_seen), pac_id=int(pac_seen), pns_inside_id=pns_id, pac_inside_id=pac_id)
