"""Allocation of outside identifiers: NAPT ports, ICMP query ids, PPTP Call IDs.

One ``IdPool`` per namespace (for ports: per protocol and global address; for
Call IDs: per global address and server).  Policy (SEIL "automatic", RFC 4787
REQ-3): keep the inside value when it is free, otherwise take the nearest free
value above it in the same range (0-1023 stays below 1024, the rest stays
above).  In ``random`` mode a random free value in the range is taken, except
that IKE's 500 and 4500 are still kept when free (B4).  Values listed in
``reserved`` (SNAPT listen ports) are never handed out.
"""
from __future__ import annotations

import random as _random
from typing import Any

IKE_PORTS = frozenset((500, 4500))


def port_range(port: int) -> tuple[int, int]:
    """The range a NAPT port must stay in (RFC 4787 REQ-3 port range preservation)."""
    return (1, 1023) if port < 1024 else (1024, 65535)


class IdPool:
    __slots__ = ("used", "reserved", "rng", "n_low")

    def __init__(self, rng: _random.Random | None = None, reserved: frozenset[int] = frozenset()):
        self.used: dict[int, Any] = {}
        self.reserved = reserved
        self.rng = rng
        self.n_low = 0  # used values below 1024 (to know when a range is full without a scan)

    def _full(self, lo: int, hi: int) -> bool:
        if lo == 0 and hi == 65535:
            return len(self.used) + len(self.reserved) >= 65536
        if hi < 1024:
            return self.n_low >= hi - lo + 1
        if lo >= 1024:
            return len(self.used) - self.n_low >= hi - lo + 1
        return False

    def _mark(self, value: int, owner: Any) -> int:
        self.used[value] = owner
        if value < 1024:
            self.n_low += 1
        return value

    def is_free(self, value: int) -> bool:
        return value not in self.used and value not in self.reserved

    def take(self, preferred: int, lo: int, hi: int, owner: Any, *, keep_if_free: bool = True) -> int | None:
        """Allocate a value in [lo, hi] for ``owner``; None when the range is full."""
        if (keep_if_free or preferred in IKE_PORTS) and lo <= preferred <= hi and self.is_free(preferred):
            return self._mark(preferred, owner)
        if self._full(lo, hi):
            return None
        span = hi - lo + 1
        if self.rng is not None:
            for _ in range(16):
                v = self.rng.randint(lo, hi)
                if self.is_free(v):
                    return self._mark(v, owner)
            start = self.rng.randint(lo, hi)
        else:
            start = preferred + 1 if lo <= preferred < hi else lo
        for i in range(span):
            v = lo + (start - lo + i) % span
            if self.is_free(v):
                return self._mark(v, owner)
        return None

    def claim(self, value: int, owner: Any) -> bool:
        """Take exactly ``value`` (restoring saved state); False when it is in use."""
        if value in self.used:
            return False
        self._mark(value, owner)
        return True

    def release(self, value: int, owner: Any = None) -> None:
        if value in self.used and (owner is None or self.used[value] is owner):
            del self.used[value]
            if value < 1024:
                self.n_low -= 1
