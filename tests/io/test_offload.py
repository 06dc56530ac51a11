"""Virtual-link fixes: completing partial checksums, segmenting super-frames (checked with scapy)."""
from __future__ import annotations

import struct

import pytest
from scapy.all import IP, TCP, UDP, raw  # type: ignore[attr-defined]

from passnat.io.offload import (
    GSO_TCPV4,
    GSO_UDP,
    GSO_UDP_L4,
    VNET_F_NEEDS_CSUM,
    complete_checksum,
    complete_partial,
    parse_vnet,
    segment,
    to_partial,
)
from passnat.packet.checksum import fold, ones_sum, pseudo_sum


def partial(pkt: bytes) -> bytes:
    """``pkt`` as a sender with checksum offload hands it over: the L4 field holds the
    (non-inverted) pseudo-header sum, as Linux's CHECKSUM_PARTIAL does."""
    ihl = (pkt[0] & 15) * 4
    proto = pkt[9]
    co = ihl + (16 if proto == 6 else 6)
    src, dst = struct.unpack_from("!II", pkt, 12)
    ps = pseudo_sum(src, dst, proto, len(pkt) - ihl)
    return pkt[:co] + struct.pack("!H", ps) + pkt[co + 2:]


def checksums_ok(pkt: bytes) -> bool:
    ip = IP(pkt)
    fresh = IP(pkt)
    del fresh.chksum
    layer = TCP if ip.haslayer(TCP) else UDP
    del fresh[layer].chksum
    rebuilt = IP(raw(fresh))
    return rebuilt.chksum == ip.chksum and rebuilt[layer].chksum == ip[layer].chksum


TCP_PKT = raw(IP(src="192.168.0.11", dst="203.0.113.10") / TCP(sport=40000, dport=80, flags="PA", seq=1000)
              / (b"abc" * 333))
UDP_PKT = raw(IP(src="192.168.0.11", dst="203.0.113.10") / UDP(sport=5000, dport=53) / b"odd-length!")


@pytest.mark.parametrize("pkt", [TCP_PKT, UDP_PKT], ids=["tcp", "udp"])
def test_partial_checksum_completed_at_csum_start(pkt: bytes) -> None:
    part = partial(pkt)
    assert part != pkt
    offset = 16 if pkt[9] == 6 else 6
    assert complete_partial(part, 20, offset) == pkt
    assert complete_checksum(part) == pkt
    assert checksums_ok(complete_partial(part, 20, offset))


def test_udp_zero_result_is_sent_as_all_ones() -> None:
    # choose the payload word so that the one's complement sum is 0xFFFF (checksum 0)
    base = raw(IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1, dport=2, chksum=0) / b"\0\0")
    s0 = fold(pseudo_sum(0x0A000001, 0x0A000002, 17, 10) + ones_sum(base, 20))
    p = base[:28] + struct.pack("!H", ~s0 & 0xFFFF)
    assert complete_partial(partial(p), 20, 6)[26:28] == b"\xff\xff"
    assert checksums_ok(complete_partial(partial(p), 20, 6))


def test_complete_checksum_leaves_other_protocols_and_rejects_garbage() -> None:
    icmp = raw(IP(src="10.0.0.1", dst="10.0.0.2", proto=1) / b"\x08\x00\x00\x00\x00\x01\x00\x01")
    assert complete_checksum(icmp) == icmp
    assert complete_checksum(b"\x45\x00\x00") is None
    assert complete_checksum(TCP_PKT[:30]) is None  # total length beyond the data


def test_tcp_superframe_segmented_like_tso() -> None:
    payload = bytes(range(256)) * 40  # 10240 bytes
    big = raw(IP(src="192.168.0.11", dst="203.0.113.10", id=100, flags="DF")
              / TCP(sport=40000, dport=80, flags="FPA", seq=0xFFFFF000, options=[("NOP", None)] * 4)
              / payload)
    segs = segment(partial(big), GSO_TCPV4, 1448)
    assert segs is not None and len(segs) == 8  # 7 x 1448 + 104
    data = b""
    for i, s in enumerate(segs):
        ip = IP(s)
        assert checksums_ok(s)
        assert ip.len == len(s) <= 1500
        assert ip.id == 100 + i and ip.flags == "DF"
        assert ip[TCP].seq == (0xFFFFF000 + i * 1448) & 0xFFFFFFFF
        assert ip[TCP].flags == ("FPA" if i == len(segs) - 1 else "A")
        assert len(ip[TCP].options) == 4
        data += bytes(ip[TCP].payload)
    assert data == payload


def test_udp_superframe_segmented_like_uso() -> None:
    payload = b"x" * 3000
    big = raw(IP(src="192.168.0.11", dst="203.0.113.10") / UDP(sport=4000, dport=4001) / payload)
    segs = segment(partial(big), GSO_UDP_L4, 1200)
    assert segs is not None and [len(s) for s in segs] == [1228, 1228, 628]
    for s in segs:
        assert checksums_ok(s)
        assert IP(s)[UDP].len == len(s) - 20


def test_unsupported_superframes_are_refused() -> None:
    assert segment(TCP_PKT, GSO_UDP, 1000) is None  # UFO: not segmentable here
    assert segment(UDP_PKT, GSO_TCPV4, 1000) is None  # type does not match the packet
    assert segment(TCP_PKT, GSO_TCPV4, 0) is None
    assert segment(b"garbage", GSO_TCPV4, 100) is None


def test_vnet_header_parse() -> None:
    raw_hdr = struct.pack("<BBHHHH", VNET_F_NEEDS_CSUM, GSO_TCPV4 | 0x80, 66, 1448, 34, 16)
    v = parse_vnet(b"xx" + raw_hdr, 2)
    assert (v.flags, v.gso_type, v.gso_size, v.csum_start, v.csum_offset) == (1, GSO_TCPV4, 1448, 34, 16)


@pytest.mark.parametrize("pkt", [TCP_PKT, UDP_PKT, raw(IP(src="10.1.2.3", dst="10.3.2.1", options=[b"\x01\x01\x01\x00"])
                                                       / UDP(sport=1, dport=2) / b"opts")], ids=["tcp", "udp", "ihl24"])
def test_to_partial_lets_the_kernel_finish(pkt: bytes) -> None:
    res = to_partial(pkt)
    assert res is not None
    vnet, part = res
    v = parse_vnet(vnet, 0)
    assert v.flags == VNET_F_NEEDS_CSUM and v.gso_type == 0
    ihl = (pkt[0] & 15) * 4
    assert v.csum_start == 14 + ihl  # from the Ethernet header
    assert part == partial(pkt)  # the field is the pseudo-header sum, as a sending Linux leaves it
    assert complete_partial(part, v.csum_start - 14, v.csum_offset) == pkt  # what the NIC computes


def test_to_partial_refuses_fragments_and_other_protocols() -> None:
    frag = raw(IP(src="10.0.0.1", dst="10.0.0.2", flags="MF") / UDP() / b"x")
    assert to_partial(frag) is None
    assert to_partial(raw(IP(src="10.0.0.1", dst="10.0.0.2", proto=47) / b"gre!")) is None
    assert to_partial(raw(IP(src="10.0.0.1", dst="10.0.0.2", proto=6) / b"short")) is None
