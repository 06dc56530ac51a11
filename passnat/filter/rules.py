"""Filter rules compiled at configuration load (R16): what one rule matches.

A ``FilterRule`` of the configuration becomes a ``Rule`` whose conditions are
plain integers and ranges, so that testing a packet against it is a handful
of comparisons on a ``View`` (the fields of one packet as the filter sees
it).  ``compile_rules`` also builds the per filter point lists: for every
(interface, direction) the enabled rules that apply there, in configured
order (first match wins).

Matching, per keyword (docs/filter.md):
  * ``protocol``: a number (names are numbers), ``tcpudp`` (6 or 17),
    ``tcp-synonly`` (a TCP segment opening a connection: SYN set, ACK clear)
    and ``tcp-established`` (every other TCP segment); no protocol = any.
  * ``src``/``dst``: a prefix or range; ``self`` = the router's own
    addresses (interface addresses and NAT global addresses); an interface
    name = that interface's connected subnets (nothing when it has none).
  * ``srcport``/``dstport``: inclusive ranges, TCP and UDP only.
  * ``icmp-type``: the ICMP type (only ICMP matches).
  * ``ipopts``: ``none`` = no IP options, ``any`` = some option, ``<n>`` = an
    option whose type octet is n; not given = regardless of options.

Invariants: a ``Rule`` never changes after compilation except its counter
``count``; matching never raises (a ``View`` has every field set).
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from passnat.config.model import (
    TCPUDP,
    AddrMatch,
    FilterAction,
    FilterDirection,
    FilterRule,
)

# TCP classes of a View
TCP_NONE = 0  # not TCP, or flags unknown
TCP_SYNONLY = 1  # SYN set, ACK clear: a connection request
TCP_ESTABLISHED = 2  # every other TCP segment

Ranges = tuple[tuple[int, int], ...]


class View:
    """One packet as a filter point sees it (addresses and ports as they are there)."""

    __slots__ = ("dport", "dst", "icmp_type", "options", "ports", "proto", "sport", "src", "tcp")

    def __init__(self, proto: int, src: int, dst: int, sport: int = 0, dport: int = 0, *,
                 ports: bool = False, tcp: int = TCP_NONE, icmp_type: int = -1,
                 options: bytes = b""):
        self.proto = proto
        self.src = src
        self.dst = dst
        self.sport = sport  # TCP/UDP ports, ICMP query id (both), else 0
        self.dport = dport
        self.ports = ports  # True when sport/dport are TCP/UDP ports read from the packet
        self.tcp = tcp
        self.icmp_type = icmp_type
        self.options = options  # the IPv4 options bytes (empty: none)

    @property
    def key(self) -> tuple[int, int, int, int, int]:
        """The flow key of this packet's direction (protocol, source, source port, ...)."""
        return (self.proto, self.src, self.sport, self.dst, self.dport)


def option_types(options: bytes) -> frozenset[int]:
    """The type octets of the IPv4 options in ``options`` (RFC 791 §3.1)."""
    found: set[int] = set()
    i = 0
    while i < len(options):
        kind = options[i]
        if kind == 0:
            break
        found.add(kind)
        if kind == 1:
            i += 1
            continue
        if i + 1 >= len(options) or options[i + 1] < 2:
            break
        i += options[i + 1]
    return frozenset(found)


@dataclass(slots=True, eq=False)
class Rule:
    """A compiled ``filter add`` line with its counter (packets it decided)."""

    config: FilterRule
    position: int  # 1-based place in evaluation order
    passes: bool
    proto: int | None  # an IP protocol number, or None (any / a TCP class / tcpudp)
    tcpudp: bool
    tcp_class: int  # TCP_NONE (no TCP class condition), TCP_SYNONLY or TCP_ESTABLISHED
    icmp_type: int | None
    src: Ranges | None  # None: any
    dst: Ranges | None
    sport: tuple[int, int] | None
    dport: tuple[int, int] | None
    ipopts: str | int | None
    count: int = 0

    @property
    def name(self) -> str:
        return self.config.name

    def matches(self, v: View) -> bool:
        proto = v.proto
        if self.proto is not None and proto != self.proto:
            return False
        if self.tcpudp and proto != 6 and proto != 17:
            return False
        if self.tcp_class and (proto != 6 or v.tcp != self.tcp_class):
            return False
        if self.src is not None and not _in(v.src, self.src):
            return False
        if self.dst is not None and not _in(v.dst, self.dst):
            return False
        if self.sport is not None and not (v.ports and self.sport[0] <= v.sport <= self.sport[1]):
            return False
        if self.dport is not None and not (v.ports and self.dport[0] <= v.dport <= self.dport[1]):
            return False
        if self.icmp_type is not None and (proto != 1 or v.icmp_type != self.icmp_type):
            return False
        opts = self.ipopts
        if opts is not None:
            if opts == "none":
                return not v.options
            if opts == "any":
                return bool(v.options)
            return opts in option_types(v.options)
        return True


def _in(addr: int, ranges: Ranges) -> bool:
    return any(lo <= addr <= hi for lo, hi in ranges)


def address_ranges(m: AddrMatch, self_addrs: Iterable[int],
                   prefixes: dict[str, tuple[tuple[int, int], ...]]) -> Ranges | None:
    """The ranges ``src``/``dst`` ``m`` stands for (None: any address)."""
    if m.kind == "any":
        return None
    if m.kind == "self":
        return tuple((a, a) for a in sorted(set(self_addrs)))
    if m.kind == "interface":
        nets = prefixes.get(m.interface or "", ())
        return tuple((net, net | (~mask & 0xFFFFFFFF)) for net, mask in nets)
    assert m.range is not None
    return ((m.range.first, m.range.last),)


def compile_rule(rule: FilterRule, position: int, self_addrs: Iterable[int],
                 prefixes: dict[str, tuple[tuple[int, int], ...]]) -> Rule:
    proto: int | None = None
    tcpudp = False
    tcp_class = TCP_NONE
    if isinstance(rule.protocol, int):
        proto = rule.protocol
    elif rule.protocol == TCPUDP:
        tcpudp = True
    elif rule.protocol == "tcp-synonly":
        tcp_class = TCP_SYNONLY
    elif rule.protocol == "tcp-established":
        tcp_class = TCP_ESTABLISHED
    return Rule(
        config=rule, position=position, passes=rule.action is FilterAction.PASS, proto=proto,
        tcpudp=tcpudp, tcp_class=tcp_class, icmp_type=rule.icmp_type,
        src=address_ranges(rule.src, self_addrs, prefixes), dst=address_ranges(rule.dst, self_addrs, prefixes),
        sport=(rule.srcport.first, rule.srcport.last) if rule.srcport else None,
        dport=(rule.dstport.first, rule.dstport.last) if rule.dstport else None,
        ipopts=rule.ipopts,
    )


def applies(rule: Rule, iface: str, inbound: bool) -> bool:
    """Whether ``rule`` is evaluated at filter point (``iface``, in/out)."""
    c = rule.config
    if not c.enabled:
        return False
    if c.interface != "any" and c.interface != iface:
        return False
    if c.direction is FilterDirection.INOUT:
        return True
    return (c.direction is FilterDirection.IN) == inbound


Point = tuple[str, bool]  # (interface, inbound)


def point_lists(rules: list[Rule], interfaces: Iterable[str]) -> dict[Point, tuple[Rule, ...]]:
    """Per (interface, inbound): the rules evaluated there, in order.

    The entry for interface ``""`` serves interfaces the configuration does not
    name (only ``interface any`` rules apply to them).
    """
    points: dict[Point, tuple[Rule, ...]] = {}
    for iface in list(interfaces) + [""]:
        for inbound in (True, False):
            points[(iface, inbound)] = tuple(r for r in rules if applies(r, iface or "\0", inbound))
    return points
