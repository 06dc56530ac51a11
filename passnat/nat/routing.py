"""Interfaces and the IPv4 routing table (R1): connected routes plus ``route add``.

Longest prefix match, then the lowest ``distance``.  A route names a gateway
(resolved through a connected route to find its interface), an interface
(destinations are on-link), or ``discard``.  Lookups are cached per
destination; the cache is bounded and rebuilt with the table on reconfigure.
"""
from __future__ import annotations

from dataclasses import dataclass

from passnat.config.model import Config, InterfaceConfig


@dataclass(frozen=True, slots=True)
class Iface:
    """An interface as the engine sees it (addresses as ints)."""

    name: str
    addrs: tuple[int, ...]  # the interface's own addresses, primary first
    prefixes: tuple[tuple[int, int], ...]  # (network, mask) of each connected subnet
    mtu: int
    mss: int | None  # TCP MSS clamp (None: off)

    @property
    def primary(self) -> int | None:
        return self.addrs[0] if self.addrs else None

    def broadcasts(self) -> tuple[int, ...]:
        return tuple(net | (~mask & 0xFFFFFFFF) for net, mask in self.prefixes if mask != 0xFFFFFFFF)

    @classmethod
    def from_config(cls, itf: InterfaceConfig) -> Iface:
        addrs = tuple(int(a.ip) for a in itf.addresses)
        prefixes = tuple((int(a.network.network_address), int(a.network.netmask)) for a in itf.addresses)
        return cls(itf.name, addrs, prefixes, itf.effective_mtu, itf.effective_mss)


@dataclass(frozen=True, slots=True)
class RouteEntry:
    net: int
    mask: int
    plen: int
    distance: int
    iface: str | None  # None only for discard
    gateway: int | None  # None: on-link
    discard: bool = False


#: Result of a lookup: (interface, next hop address) or None for no route / discard.
Hop = tuple[str, int]

DISCARD = ("", -1)


class RoutingTable:
    _CACHE_MAX = 65536

    def __init__(self, config: Config):
        self.ifaces: dict[str, Iface] = {i.name: Iface.from_config(i) for i in config.interfaces}
        entries: list[RouteEntry] = []
        for itf in self.ifaces.values():
            for net, mask in itf.prefixes:
                entries.append(RouteEntry(net, mask, bin(mask).count("1"), 0, itf.name, None))
        for r in config.routes:
            net = int(r.destination.network_address)
            mask = int(r.destination.netmask)
            plen = r.destination.prefixlen
            if r.discard:
                entries.append(RouteEntry(net, mask, plen, r.distance, None, None, True))
            elif r.gateway is not None:
                gw = int(r.gateway)
                out = self._connected(entries, gw)
                if out is not None:
                    entries.append(RouteEntry(net, mask, plen, r.distance, out, gw))
            elif r.interface is not None:
                entries.append(RouteEntry(net, mask, plen, r.distance, r.interface, None))
        # longest prefix first, then lowest distance: the first match wins
        entries.sort(key=lambda e: (-e.plen, e.distance))
        self.entries = tuple(entries)
        self._cache: dict[int, Hop | None] = {}

    @staticmethod
    def _connected(entries: list[RouteEntry], addr: int) -> str | None:
        best: RouteEntry | None = None
        for e in entries:
            if (e.gateway is None and not e.discard and addr & e.mask == e.net
                    and (best is None or e.plen > best.plen)):
                best = e
        return best.iface if best else None

    def lookup(self, dst: int) -> Hop | None:
        """(interface, next hop) for ``dst``; ``DISCARD`` for a discard route; None: no route."""
        hit = self._cache.get(dst, 0)
        if hit != 0:
            return hit  # type: ignore[return-value]
        result: Hop | None = None
        for e in self.entries:
            if dst & e.mask == e.net:
                if e.discard:
                    result = DISCARD
                else:
                    assert e.iface is not None
                    result = (e.iface, e.gateway if e.gateway is not None else dst)
                break
        if len(self._cache) >= self._CACHE_MAX:
            self._cache.clear()
        self._cache[dst] = result
        return result

    def on_link(self, iface: str, addr: int) -> bool:
        itf = self.ifaces.get(iface)
        return itf is not None and any(addr & m == n for n, m in itf.prefixes)
