"""Configured translations: ``nat static`` (SNAT), ``nat dynamic`` (DNAT) and ``nat snapt``.

Static and dynamic NAT (SEIL's names) translate addresses only, never ports,
so every IP protocol passes (R6): a static entry is a fixed 1:1 pair in both
directions; a dynamic entry binds a private address to a free global of the
pool on its first outbound packet and keeps it while traffic flows (``nat
timeout dynamic``).  SNAPT (R5) maps inbound packets to a global address's
port (range) or IP protocol onto an inside host; ``default`` catches every
TCP/UDP port no other rule takes, and is consulted last.

Priority (R2): static > snapt > napt; the router asks this module first.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass

from passnat.config.model import Config, SnaptKind, SnaptRule


@dataclass(slots=True)
class DynBinding:
    nat_if: str
    private: int
    global_: int
    last: float
    hd: float = 0.0  # queued deadline
    alive: bool = True


@dataclass(frozen=True, slots=True)
class SnaptTarget:
    rule: SnaptRule
    addr: int
    port: int  # translated destination port (the packet's port for protocol/default rules)


class StaticNat:
    def __init__(self, config: Config, dynamic_timeout: float):
        self.timeout = dynamic_timeout
        self.static_out: dict[tuple[str, int], int] = {}
        self.static_in: dict[tuple[str, int], int] = {}
        for st in config.nat.static:
            self.static_out[(st.interface, int(st.private))] = int(st.global_)
            self.static_in[(st.interface, int(st.global_))] = int(st.private)
        self.dyn_private: dict[str, list[tuple[int, int]]] = {}
        self.dyn_globals: dict[str, list[int]] = {}
        for d in config.nat.dynamic:
            if d.side == "private":
                self.dyn_private.setdefault(d.interface, []).append((d.addresses.first, d.addresses.last))
            else:
                pool = self.dyn_globals.setdefault(d.interface, [])
                pool.extend(range(d.addresses.first, min(d.addresses.last, d.addresses.first + 65535) + 1))
        self.bind_out: dict[tuple[str, int], DynBinding] = {}
        self.bind_in: dict[tuple[str, int], DynBinding] = {}
        self._heap: list[tuple[float, int, DynBinding]] = []
        self._seq = 0
        #: bindings made, refreshed or ended since the HA sync last looked (None: no sync peer)
        self.changed: set[tuple[str, int]] | None = None

    def global_addresses(self) -> dict[str, set[int]]:
        """Every global address this module answers for, per interface (for ARP)."""
        out: dict[str, set[int]] = {}
        for (itf, g) in self.static_in:
            out.setdefault(itf, set()).add(g)
        for itf, pool in self.dyn_globals.items():
            out.setdefault(itf, set()).update(pool)
        return out

    def adopt(self, old: StaticNat) -> None:
        """Keep the dynamic bindings of a previous configuration that are still valid."""
        for b in list(old.bind_out.values()):
            if b.alive and self.is_dynamic_private(b.nat_if, b.private) and \
                    b.global_ in self.dyn_globals.get(b.nat_if, ()):
                self._install(b)

    # ------------------------------------------------------------------ out

    def outbound(self, nat_if: str, src: int, now: float) -> int | None:
        """The global address for ``src`` leaving via ``nat_if``: static, then dynamic."""
        g = self.static_out.get((nat_if, src))
        if g is not None:
            return g
        b = self.bind_out.get((nat_if, src))
        if b is not None:
            b.last = now
            return b.global_
        return None

    def is_dynamic_private(self, nat_if: str, src: int) -> bool:
        return any(lo <= src <= hi for lo, hi in self.dyn_private.get(nat_if, ()))

    def bind(self, nat_if: str, src: int, now: float) -> int | None:
        """Bind ``src`` to a free global of the dynamic pool; None when the pool is empty."""
        used = {b.global_ for (itf, _), b in self.bind_in.items() if itf == nat_if}
        for g in self.dyn_globals.get(nat_if, ()):
            if g not in used and (nat_if, g) not in self.static_in:
                b = DynBinding(nat_if, src, g, now)
                self._install(b)
                return g
        return None

    def _install(self, b: DynBinding) -> None:
        if self.changed is not None:
            self.changed.add((b.nat_if, b.private))
        self.bind_out[(b.nat_if, b.private)] = b
        self.bind_in[(b.nat_if, b.global_)] = b
        b.hd = b.last + self.timeout
        self._seq += 1
        heapq.heappush(self._heap, (b.hd, self._seq, b))

    # ------------------------------------------------------------------- in

    def static_private(self, nat_if: str, dst: int) -> int | None:
        return self.static_in.get((nat_if, dst))

    def dynamic_private(self, nat_if: str, dst: int, now: float) -> int | None:
        b = self.bind_in.get((nat_if, dst))
        if b is not None:
            b.last = now
            return b.private
        return None

    def restore(self, nat_if: str, private: int, global_: int, last: float, now: float) -> bool:
        """Re-create a saved binding if the pool still has that global free and time left."""
        if last + self.timeout <= now or (nat_if, global_) in self.bind_in or \
                not self.is_dynamic_private(nat_if, private) or global_ not in self.dyn_globals.get(nat_if, ()):
            return False
        self._install(DynBinding(nat_if, private, global_, last))
        return True

    def bindings(self) -> list[DynBinding]:
        return [b for b in self.bind_out.values() if b.alive]

    def remove(self, nat_if: str, private: int) -> bool:
        """End one binding (the HA sync applies the peer's expiry); False when there was none."""
        b = self.bind_out.pop((nat_if, private), None)
        if b is None:
            return False
        b.alive = False
        if self.bind_in.get((nat_if, b.global_)) is b:
            del self.bind_in[(nat_if, b.global_)]
        if self.changed is not None:
            self.changed.add((nat_if, private))
        return True

    def clear(self) -> int:
        n = len(self.bind_out)
        for b in self.bind_out.values():
            b.alive = False
            if self.changed is not None:
                self.changed.add((b.nat_if, b.private))
        self.bind_out.clear()
        self.bind_in.clear()
        return n

    # ---------------------------------------------------------------- timers

    def next_deadline(self) -> float | None:
        while self._heap and (not self._heap[0][2].alive or self._heap[0][2].hd != self._heap[0][0]):
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else None

    def expire(self, now: float) -> None:
        heap = self._heap
        while heap and heap[0][0] <= now:
            dl, _, b = heapq.heappop(heap)
            if not b.alive or b.hd != dl:
                continue
            exp = b.last + self.timeout
            if self.changed is not None:
                self.changed.add((b.nat_if, b.private))  # ended, or alive with a new idle time
            if exp <= now:
                b.alive = False
                self.bind_out.pop((b.nat_if, b.private), None)
                self.bind_in.pop((b.nat_if, b.global_), None)
            else:
                b.hd = exp
                self._seq += 1
                heapq.heappush(heap, (exp, self._seq, b))


class Snapt:
    """Static NAPT rules per NAT interface, in configured order, ``default`` last."""

    def __init__(self, config: Config):
        self.rules: dict[str, list[SnaptRule]] = {}
        for r in config.nat.snapt:
            if r.enabled and r.kind is not SnaptKind.DEFAULT:
                self.rules.setdefault(r.interface, []).append(r)
        for r in config.nat.snapt:
            if r.enabled and r.kind is SnaptKind.DEFAULT:
                self.rules.setdefault(r.interface, []).append(r)

    def lookup(self, nat_if: str, proto: int, dport: int) -> SnaptTarget | None:
        for r in self.rules.get(nat_if, ()):
            if proto not in r.protocols():
                continue
            if r.kind is SnaptKind.PORTS:
                assert r.listen is not None and r.forward_ports is not None
                if dport in r.listen:
                    return SnaptTarget(r, int(r.forward), r.forward_ports.first + (dport - r.listen.first))
            else:
                return SnaptTarget(r, int(r.forward), dport)
        return None

    def reserved_ports(self, nat_if: str) -> dict[int, frozenset[int]]:
        """Listen ports per protocol that NAPT must never hand out on this interface."""
        res: dict[int, set[int]] = {}
        for r in self.rules.get(nat_if, ()):
            if r.kind is SnaptKind.PORTS and r.listen is not None:
                for proto in r.protocols():
                    res.setdefault(proto, set()).update(range(r.listen.first, r.listen.last + 1))
        return {p: frozenset(v) for p, v in res.items()}

    def is_target(self, nat_if: str, addr: int, proto: int) -> bool:
        """True when ``addr`` is where a rule forwards ``proto`` to (its replies are NATed)."""
        return any(int(r.forward) == addr and proto in r.protocols() for r in self.rules.get(nat_if, ()))
