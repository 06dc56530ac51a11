"""Router fragmentation (RFC 791 §3.2, R23): offsets, MF, header checksums, copied options."""
from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.all import (  # type: ignore[attr-defined]
    IP,
    UDP,
    IPOption_LSRR,
    IPOption_Router_Alert,
    IPOption_RR,
    Raw,
    raw,
)

from passnat.packet.fragment import copied_options, fragment
from tests.nat.fragment_helpers import check_fragment, reassemble


def datagram(size: int, *, df: bool = False, options: list[object] | None = None, ident: int = 99) -> bytes:
    return raw(IP(src="10.0.0.1", dst="10.0.0.2", id=ident, flags="DF" if df else 0, options=options or [])
               / UDP(sport=1, dport=2) / Raw(bytes(i % 253 for i in range(size))))


@pytest.mark.parametrize("size, mtu, expected", [
    (1472, 1400, [(0, 1376, True), (1376, 104, False)]),     # 1500 bytes through 1400
    (1472, 1500, [(0, 1480, False)]),                         # fits: one piece, unchanged
    (1000, 576, [(0, 552, True), (552, 456, False)]),
    (100, 68, [(0, 48, True), (48, 48, True), (96, 12, False)]),   # the smallest MTU (RFC 791)
])
def test_offsets_sizes_and_mf(size: int, mtu: int, expected: list[tuple[int, int, bool]]) -> None:
    pkt = datagram(size)
    frags = fragment(pkt, mtu)
    assert frags is not None
    assert [check_fragment(f) for f in frags] == expected
    assert all(len(f) <= mtu for f in frags)
    assert reassemble(frags) == pkt


def test_df_set_refuses() -> None:
    assert fragment(datagram(1472, df=True), 1400) is None


def test_identification_and_other_fields_are_kept() -> None:
    pkt = datagram(3000, ident=0xBEEF)
    for f in fragment(pkt, 1500) or []:
        p = IP(f)
        assert (p.id, p.ttl, p.proto, p.src, p.dst, p.tos) == (0xBEEF, 64, 17, "10.0.0.1", "10.0.0.2", 0)


def test_fragmenting_a_fragment_continues_its_offsets_and_mf() -> None:
    whole = datagram(4000)
    middle = bytearray(fragment(whole, 2000)[1])              # offset 1976, MF set
    pieces = fragment(middle, 600)
    assert pieces is not None
    offs = [check_fragment(p) for p in pieces]
    assert offs[0][0] == 1976 and all(mf for _, _, mf in offs)  # the original MF is kept on the last
    last = fragment(bytearray(fragment(whole, 2000)[-1]), 600)
    assert last is not None and not check_fragment(last[-1])[2]
    everything = [fragment(whole, 2000)[0]] + pieces + last
    assert reassemble(everything) == whole


def test_only_copied_options_are_repeated() -> None:
    opts = [IPOption_Router_Alert(), IPOption_RR(routers=["0.0.0.0"]), IPOption_LSRR(routers=["10.9.9.9"])]
    pkt = datagram(2000, options=opts)
    frags = fragment(pkt, 800)
    assert frags is not None and len(frags) == 3
    first = IP(frags[0])
    assert [o.option for o in first.options if o.option] == [20, 7, 3]
    for f in frags[1:]:
        later = IP(f)
        assert [o.option for o in later.options if o.option] == [20, 3]   # RR is not copied; RA and LSRR are
        assert later.ihl * 4 == 20 + 12                       # 4 + 7 padded to 12
    assert reassemble(frags)[IP(pkt).ihl * 4:] == pkt[IP(pkt).ihl * 4:]


@pytest.mark.parametrize("options, expected", [
    (b"", b""),
    (b"\x01\x01\x01\x00", b""),                                # NOPs and EOL only
    (b"\x94\x04\x00\x00", b"\x94\x04\x00\x00"),                # router alert, copied
    (b"\x07\x07\x04\x00\x00\x00\x00\x00", b""),                # record route, not copied
    (b"\x83\x07\x04\x0a\x00\x00\x01\x00", b"\x83\x07\x04\x0a\x00\x00\x01\x00"),   # LSRR, copied, padded
    (b"\x94\x01\x00\x00", b""),                                # malformed length: stop
    (b"\x94\x09\x00\x00", b"\x94\x09\x00\x00"),                # length past the end: what is there, padded
])
def test_copied_options(options: bytes, expected: bytes) -> None:
    assert copied_options(options) == expected


@settings(max_examples=150, deadline=None)
@given(st.integers(min_value=1, max_value=4000), st.integers(min_value=68, max_value=1500),
       st.integers(min_value=0, max_value=3))
def test_any_datagram_reassembles(size: int, mtu: int, n_opts: int) -> None:
    pkt = datagram(size, options=[IPOption_Router_Alert()] * n_opts)
    frags = fragment(pkt, mtu)
    assert frags is not None
    assert all(len(f) <= mtu for f in frags)
    assert all(check_fragment(f)[1] % 8 == 0 for f in frags[:-1])
    assert reassemble(frags) == pkt if len(frags) > 1 else frags[0] == pkt
    assert struct.unpack_from("!H", frags[0], 4) == struct.unpack_from("!H", pkt, 4)
