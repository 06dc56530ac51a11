"""Checksum arithmetic (RFC 1071, RFC 1624): incremental updates equal full recomputation."""
from __future__ import annotations

import struct

from hypothesis import given
from hypothesis import strategies as st

from passnat.nat.flow import U16 as SHARED16
from passnat.nat.flow import deltas
from passnat.packet.checksum import TTL_DEC_DELTA, add_delta, apply_delta, checksum, delta16, delta32, ones_sum, pseudo_sum

U32 = st.integers(0, 0xFFFFFFFF)
U16 = st.integers(0, 0xFFFF)


def words_sum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s > 0xFFFF:
        s = (s & 0xFFFF) + (s >> 16)
    return s


@given(st.binary(max_size=300))
def test_ones_sum_matches_the_word_loop(data: bytes) -> None:
    assert ones_sum(data) == words_sum(data) or (words_sum(data) == 0xFFFF and ones_sum(data) == 0xFFFF)


@given(st.binary(min_size=8, max_size=64).filter(lambda b: len(b) % 2 == 0), U32, st.integers(0, 1))
def test_incremental_32_bit_update_equals_recomputation(data: bytes, new: int, where: int) -> None:
    buf = bytearray(data)
    off = 0 if where == 0 else len(buf) - 4
    old = struct.unpack_from("!I", buf, off)[0]
    cs = checksum(buf)
    struct.pack_into("!I", buf, off, new)
    got, want = apply_delta(cs, delta32(old, new)), checksum(buf)
    assert got == want or {got, want} == {0, 0xFFFF}  # one's complement has two zeros


@given(st.binary(min_size=4, max_size=64).filter(lambda b: len(b) % 2 == 0), U16)
def test_incremental_16_bit_update_equals_recomputation(data: bytes, new: int) -> None:
    buf = bytearray(data)
    old = struct.unpack_from("!H", buf, 0)[0]
    cs = checksum(buf)
    struct.pack_into("!H", buf, 0, new)
    got, want = apply_delta(cs, delta16(old, new)), checksum(buf)
    assert got == want or {got, want} == {0, 0xFFFF}  # one's complement has two zeros


def test_ttl_delta_is_the_same_for_every_ttl_and_protocol() -> None:
    for ttl in (2, 64, 255):
        for proto in (1, 6, 17, 50):
            assert delta16(ttl << 8 | proto, (ttl - 1) << 8 | proto) == TTL_DEC_DELTA


def test_pseudo_sum() -> None:
    assert pseudo_sum(0x0A000001, 0x0A000002, 17, 8) == words_sum(struct.pack("!IIBBH", 0x0A000001, 0x0A000002, 0, 17, 8))


@given(U32, U32, U16, U16, st.booleans())
def test_flow_deltas_equal_the_helpers(a: int, b: int, p: int, q: int, pseudo: bool) -> None:
    ipd, l4d = deltas(a, b, p, q, pseudo)
    ipdn = delta32(a, b)
    l4 = add_delta(delta16(p, q), ipdn) if pseudo else delta16(p, q)
    assert ipd == add_delta(ipdn, TTL_DEC_DELTA)
    assert l4d == l4
    assert ipd is SHARED16[ipd] and l4d is SHARED16[l4d]  # shared objects: no memory per session
