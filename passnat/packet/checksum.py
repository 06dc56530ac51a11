"""Internet checksum arithmetic: RFC 1071 full sums and RFC 1624 incremental updates.

The one hot module of the data path; kept small and free of dependencies so that
it could be compiled later.  All values are 16-bit one's complement quantities
held in Python ints.

Invariant: ``delta`` values are one's complement sums folded into 0..0xFFFF and
can be added to a folded sum with one end-around carry.
"""
from __future__ import annotations


def fold(s: int) -> int:
    """Fold a wide sum into 16 bits with end-around carries."""
    while s > 0xFFFF:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def ones_sum(data: bytes | bytearray | memoryview, start: int = 0, end: int | None = None) -> int:
    """One's complement sum (folded, not inverted) of ``data[start:end]`` (RFC 1071)."""
    if end is None:
        end = len(data)
    chunk = bytes(data[start:end])
    if len(chunk) & 1:
        chunk += b"\x00"
    s = int.from_bytes(chunk, "big")
    # Summing 16-bit words equals the big integer modulo 0xFFFF (with 0 → 0xFFFF
    # ambiguity resolved below): 2**16 ≡ 1 (mod 0xFFFF).
    if s == 0:
        return 0
    r = s % 0xFFFF
    return r if r else 0xFFFF


def checksum(data: bytes | bytearray | memoryview, start: int = 0, end: int | None = None,
             initial: int = 0) -> int:
    """The Internet checksum (inverted sum) of ``data[start:end]`` plus ``initial``."""
    return (~fold(ones_sum(data, start, end) + initial)) & 0xFFFF


def pseudo_sum(src: int, dst: int, proto: int, length: int) -> int:
    """One's complement sum of the IPv4 pseudo-header (RFC 793 §3.1, RFC 768)."""
    return fold((src >> 16) + (src & 0xFFFF) + (dst >> 16) + (dst & 0xFFFF) + proto + length)


def delta32(old: int, new: int) -> int:
    """Checksum delta for replacing a 32-bit field ``old`` by ``new`` (RFC 1624 eqn. 3)."""
    s = (~old >> 16 & 0xFFFF) + (~old & 0xFFFF) + (new >> 16) + (new & 0xFFFF)
    s = (s & 0xFFFF) + (s >> 16)
    return (s & 0xFFFF) + (s >> 16)


def delta16(old: int, new: int) -> int:
    """Checksum delta for replacing a 16-bit field ``old`` by ``new``."""
    s = (~old & 0xFFFF) + new
    return (s & 0xFFFF) + (s >> 16)


def add_delta(*deltas: int) -> int:
    """One's complement sum of deltas (up to 257 of them)."""
    s = sum(deltas)
    s = (s & 0xFFFF) + (s >> 16)
    return (s & 0xFFFF) + (s >> 16)


def apply_delta(csum: int, delta: int) -> int:
    """New checksum after a change whose delta is ``delta``: HC' = ~(~HC + delta)."""
    s = (csum ^ 0xFFFF) + delta
    s = (s & 0xFFFF) + (s >> 16)
    return s ^ 0xFFFF


#: Delta of decrementing the TTL by one: the 16-bit word (ttl << 8 | proto) drops by 0x100.
TTL_DEC_DELTA = delta16(0x0100, 0x0000)
