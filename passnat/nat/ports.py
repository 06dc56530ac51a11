"""Allocation of outside identifiers: NAPT ports, ICMP query ids, PPTP Call IDs.

One ``IdPool`` per namespace (for ports: per protocol and global address; for
Call IDs: per global address and server).  Policy (SEIL "automatic", RFC 4787
REQ-3): keep the inside value when it is free, otherwise take the nearest free
value above it in the same range, wrapping to the bottom of the range (0-1023
stays below 1024, the rest stays above).  In ``random`` mode a random free
value in the range is taken, except that IKE's 500 and 4500 are still kept
when free (B4).  Values in ``reserved`` (SNAPT listen ports) are never handed
out, not even by ``claim``.

Cost (issue 13): every operation is O(1) whatever the pattern of values in
use.  The free values are a three-level bitmap over 0-65535 (bit set = free):
1024 words of 64 values, 16 words saying which of those words have a free bit,
and one word saying which of those 16 have one.  "The first free value at or
above v" reads at most one word per level, so the nearest free port, a random
start's next free port and "is this range exhausted" each cost a handful of
word operations -- the same for the first mapping as for the 64,511th, and the
same whether SNAPT reserves ports in the range or not.  Counters of the free
values in 0, 1-1023 and 1024-65535 answer "no port left" for the NAPT ranges
without any search.  ``ops`` counts the word reads (tests measure the bound
with it, not with a clock).

Memory: an untouched pool shares one word object 1024 times (about 8 KiB);
words are replaced as values are taken.
"""
from __future__ import annotations

import random as _random
from collections.abc import Iterable
from typing import Any

IKE_PORTS = frozenset((500, 4500))

SIZE = 65536
_FULL = (1 << 64) - 1
_TOP_FULL = (1 << 16) - 1
#: random probes before a random start's next free value is taken (random mode)
RANDOM_PROBES = 8


def port_range(port: int) -> tuple[int, int]:
    """The range a NAPT port must stay in (RFC 4787 REQ-3 port range preservation)."""
    return (1, 1023) if port < 1024 else (1024, 65535)


def _ctz(m: int) -> int:
    """Index of the lowest set bit of ``m`` (m != 0)."""
    return (m & -m).bit_length() - 1


class IdPool:
    __slots__ = ("used", "_reserved", "rng", "_l0", "_l1", "_l2", "_free", "ops")

    def __init__(self, rng: _random.Random | None = None, reserved: Iterable[int] = frozenset()):
        self.used: dict[int, Any] = {}
        self.rng = rng
        self._l0 = [_FULL] * (SIZE >> 6)  # bit b of word w: value 64w+b is free
        self._l1 = [_FULL] * (SIZE >> 12)  # bit b of word w: _l0[64w+b] has a free bit
        self._l2 = _TOP_FULL  # bit b: _l1[b] has a free bit
        self._free = [1, 1023, SIZE - 1024]  # free values in 0, 1-1023, 1024-65535 ("no port left" in O(1))
        self.ops = 0  # bitmap words read by searches (O(1) per operation; see tests)
        self._reserved: frozenset[int] = frozenset()
        self.reserved = frozenset(reserved)

    # ------------------------------------------------------------ bitmap

    def _clear(self, v: int) -> None:
        w = v >> 6
        old = self._l0[w]
        bit = 1 << (v & 63)
        if not old & bit:
            return
        self._free[0 if v == 0 else 1 if v < 1024 else 2] -= 1
        m = old & ~bit
        self._l0[w] = m
        if not m:
            w1 = w >> 6
            m1 = self._l1[w1] & ~(1 << (w & 63))
            self._l1[w1] = m1
            if not m1:
                self._l2 &= ~(1 << w1)

    def _set(self, v: int) -> None:
        w = v >> 6
        old = self._l0[w]
        bit = 1 << (v & 63)
        if old & bit:
            return
        self._free[0 if v == 0 else 1 if v < 1024 else 2] += 1
        self._l0[w] = old | bit
        self._l1[w >> 6] |= 1 << (w & 63)
        self._l2 |= 1 << (w >> 6)

    def _next_free(self, v: int) -> int:
        """The smallest free value >= ``v``, or SIZE when there is none."""
        l0 = self._l0
        w = v >> 6
        m = l0[w] >> (v & 63)
        self.ops += 1
        if m:
            return v + _ctz(m)
        w += 1
        if w >= len(l0):
            return SIZE
        l1 = self._l1
        w1 = w >> 6
        m1 = l1[w1] >> (w & 63)
        self.ops += 1
        if m1:
            w += _ctz(m1)
            self.ops += 1
            return (w << 6) + _ctz(l0[w])
        w1 += 1
        m2 = self._l2 >> w1
        self.ops += 1
        if not m2:
            return SIZE
        w1 += _ctz(m2)
        w = (w1 << 6) + _ctz(l1[w1])
        self.ops += 2
        return (w << 6) + _ctz(l0[w])

    def _free_from(self, start: int, lo: int, hi: int) -> int | None:
        """The first free value in [start, hi], else in [lo, start): None when [lo, hi] is full."""
        v = self._next_free(start)
        if v <= hi:
            return v
        if start > lo:
            v = self._next_free(lo)
            if v < start:
                return v
        return None

    # ------------------------------------------------------------ reserved values

    @property
    def reserved(self) -> frozenset[int]:
        return self._reserved

    @reserved.setter
    def reserved(self, values: frozenset[int]) -> None:
        """Replace the reserved values (SNAPT listen ports); values in use stay in use."""
        values = frozenset(v for v in values if 0 <= v < SIZE)
        for v in self._reserved - values:
            if v not in self.used:
                self._set(v)
        for v in values - self._reserved:
            self._clear(v)
        self._reserved = values

    # ------------------------------------------------------------ public

    def is_free(self, value: int) -> bool:
        return 0 <= value < SIZE and bool(self._l0[value >> 6] >> (value & 63) & 1)

    def has_free(self, lo: int, hi: int) -> bool:
        """Whether any value in [lo, hi] can be handed out (O(1))."""
        n = self._counted(lo, hi)
        return n > 0 if n is not None else self._next_free(lo) <= hi

    def _counted(self, lo: int, hi: int) -> int | None:
        """Free values in [lo, hi] from the counters when the range is made of whole segments
        (0; 1-1023; 1024-65535), else None."""
        f = self._free
        if hi == 65535:
            if lo == 1024:
                return f[2]
            if lo == 1:
                return f[1] + f[2]
            if lo == 0:
                return f[0] + f[1] + f[2]
        elif hi == 1023 and lo <= 1:
            return f[1] + (f[0] if lo == 0 else 0)
        return None

    def _mark(self, value: int, owner: Any) -> int:
        self.used[value] = owner
        self._clear(value)
        return value

    def take(self, preferred: int, lo: int, hi: int, owner: Any, *, keep_if_free: bool = True) -> int | None:
        """Allocate a value in [lo, hi] for ``owner``; None when the range is full."""
        if (keep_if_free or preferred in IKE_PORTS) and lo <= preferred <= hi and self.is_free(preferred):
            return self._mark(preferred, owner)
        if self._counted(lo, hi) == 0:
            return None  # exhausted: the counters say so without a search
        rng = self.rng
        if rng is not None:
            for _ in range(RANDOM_PROBES):
                v = rng.randint(lo, hi)
                self.ops += 1
                if self.is_free(v):
                    return self._mark(v, owner)
            start = rng.randint(lo, hi)
        else:
            start = preferred + 1 if lo <= preferred < hi else lo
        found = self._free_from(start, lo, hi)
        return None if found is None else self._mark(found, owner)

    def claim(self, value: int, owner: Any) -> bool:
        """Take exactly ``value`` (restoring saved state); False when it is in use or reserved."""
        if not self.is_free(value):
            return False
        self._mark(value, owner)
        return True

    def release(self, value: int, owner: Any = None) -> None:
        if value in self.used and (owner is None or self.used[value] is owner):
            del self.used[value]
            if value not in self._reserved:
                self._set(value)

    def free_count(self, lo: int, hi: int) -> int:
        """How many values in [lo, hi] are free (a diagnostic: O(words in the range))."""
        total = 0
        for w in range(lo >> 6, (hi >> 6) + 1):
            m = self._l0[w]
            if w == lo >> 6:
                m &= _FULL << (lo & 63)
            if w == hi >> 6:
                m &= _FULL >> (63 - (hi & 63))
            total += m.bit_count()
        return total
