"""TCP helpers (R24): finding and clamping the MSS option in place, checksums kept right."""
from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.all import IP, TCP, raw  # type: ignore[attr-defined]

from passnat.packet.checksum import checksum, pseudo_sum
from passnat.packet.tcp import clamp_mss, find_mss, set_checksum


def segment(options: list[tuple[str, object]] | bytes, flags: str = "S", payload: bytes = b"") -> bytearray:
    """An IPv4 TCP segment with ``options`` (scapy's names, or raw option bytes), checksums right."""
    if not isinstance(options, bytes):
        return bytearray(raw(IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=1234, dport=80, flags=flags,
                                                                       options=options) / payload))
    tcp = bytearray(raw(TCP(sport=1234, dport=80, flags=flags, dataofs=5 + len(options) // 4))) + options
    pkt = bytearray(raw(IP(src="10.0.0.1", dst="10.0.0.2", proto=6, len=20 + len(tcp) + len(payload))))
    pkt += tcp + payload
    pkt[10:12] = b"\0\0"
    struct.pack_into("!H", pkt, 10, checksum(pkt, 0, 20))
    set_checksum(pkt, 20)
    return pkt


def tcp_ok(buf: bytes | bytearray) -> bool:
    total = struct.unpack_from("!H", buf, 2)[0]
    src, dst = struct.unpack_from("!II", buf, 12)
    return checksum(buf, 0, 20) == 0 and checksum(buf, 20, total, pseudo_sum(src, dst, 6, total - 20)) == 0


def mss(buf: bytearray) -> int | None:
    off = find_mss(buf, 20)
    return None if off is None else struct.unpack_from("!H", buf, off)[0]


@pytest.mark.parametrize("options, limit, changed, expected", [
    ([("MSS", 1460)], 1398, True, 1398),
    ([("MSS", 1200)], 1398, False, 1200),
    ([("NOP", None), ("MSS", 1460)], 1398, True, 1398),          # at an odd offset
    ([("MSS", 1398)], 1398, False, 1398),
    ([], 1398, True, 1398),
    ([("NOP", None), ("NOP", None), ("MSS", 9000), ("WScale", 2)], 1452, True, 1452),
    ([("SAckOK", b""), ("Timestamp", (5, 0))], 536, True, 536),
    (b"\x00\x00\x00\x00", 1398, True, 1398),                      # only EOL padding: the option goes first
    (b"\x02\x03\x05\x00", 1398, True, 1398),                      # malformed MSS length: not an MSS, one added
    (b"\x01" * 40, 1398, False, None),                             # no room left
])
def test_clamp_mss(options: list[tuple[str, object]] | bytes, limit: int, changed: bool,
                   expected: int | None) -> None:
    buf = segment(options)
    assert tcp_ok(buf)
    assert clamp_mss(buf, 20, limit) is changed
    assert mss(buf) == expected
    assert tcp_ok(buf)
    p = IP(bytes(buf))
    assert p.len == len(buf) and p[TCP].sport == 1234


def test_added_option_keeps_the_payload_and_grows_the_packet_by_4() -> None:
    buf = segment([("WScale", 3), ("NOP", None)], payload=b"hello")
    before = len(buf)
    assert clamp_mss(buf, 20, 1000)
    p = IP(bytes(buf))
    assert len(buf) == before + 4 and p.len == before + 4 and p[TCP].dataofs == 7
    assert bytes(p[TCP].payload) == b"hello"
    assert [name for name, _ in p[TCP].options][:2] == ["MSS", "WScale"]
    assert tcp_ok(buf)


def test_a_bad_checksum_stays_bad() -> None:
    """Incremental updates (RFC 1624) never turn a corrupt segment into a valid one."""
    for options in ([("MSS", 1460)], []):
        buf = segment(options)
        buf[36] ^= 0x55
        assert not tcp_ok(buf)
        assert clamp_mss(buf, 20, 1000)
        assert not tcp_ok(buf)


def test_truncated_header_is_left_alone() -> None:
    buf = segment([("MSS", 1460)])
    buf[32] = 0xF0 | (buf[32] & 0x0F)                             # data offset 60 > what is there
    assert clamp_mss(buf, 20, 1000) is False


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([("NOP", None), ("MSS", 1460), ("MSS", 500), ("SAckOK", b""),
                                 ("WScale", 5), ("Timestamp", (1, 2))]), max_size=6),
       st.integers(min_value=88, max_value=65535), st.binary(max_size=32))
def test_clamp_is_always_valid(options: list[tuple[str, object]], limit: int, payload: bytes) -> None:
    buf = segment(options, payload=payload)
    if len(raw(TCP(options=options))) > 60:
        return
    original = mss(buf)
    clamp_mss(buf, 20, limit)
    assert tcp_ok(buf)
    now = mss(buf)
    if original is None:
        assert now in (limit, None)
    else:
        assert now == min(original, limit)
    assert bytes(IP(bytes(buf))[TCP].payload) == payload
