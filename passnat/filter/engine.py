"""The packet filter (R16): SEIL's ``filter add`` rules plus stateful passing.

The router asks ``Filter.check(pkt, interface, inbound)`` at two filter points
of every forwarded packet: ``in`` on the ingress interface after inbound NAT
(post-NAT, private addresses) and ``out`` on the egress interface before
outbound NAT (pre-NAT, private addresses) -- SEIL's FAQ.  At a point:

  1. states first (SEIL evaluates them with priority, ``state.py``): a reply
     of a state's flow passes anywhere; a packet in the state's own
     direction passes at the points where a ``state enable`` rule passed the
     flow; an ICMP error quoting a packet of the flow passes;
  2. then the rules that apply to the point, in configured order, first
     match wins;
  3. no match: ``filter default`` (pass unless ``filter default block``).

Every decision is counted on the rule (or state) that made it; a block
without a matching rule is counted as the default's.  ``logging on`` logs a
rule's decisions (rate limited per rule through ``router.log_event``),
``logging state-only`` the states it makes.

Fast path (the design choice, docs/filter.md): the filter never runs per
packet for an established TCP/UDP flow.  When a session's flows are built,
``decorate`` decides both filter points of each direction once, for the
packets the fast path can carry (no SYN/FIN/RST, no options, unfragmented):
  * passed at both points: the flow keeps its fast path and its hop's ``H_FC`` is
    the deciding rule or state (or a ``Fan`` of two), so the per-rule counts
    stay exact;
  * blocked at a point, or passed by a ``state enable`` rule whose state
    does not exist yet: the flow is marked slow, so every such packet meets
    ``check`` (which drops and counts it, or makes the state).
Verdicts are recomputed whenever they could change: the router rebuilds
every session's flows on ``reconfigure``; making a state and expiring one
rebuild the sessions of that flow.  On the slow path (ESP, GRE, AH and
other protocols have no fast-path flows) the rules' verdict for a packet's
fields is remembered per configuration (``_verdicts``), so a flow's packets
scan the rule list once; states are always looked up first.

A first fragment's decision covers its datagram: the fragment tracker keeps
the counters (``fragment_counter``) and, for a block, drops the later
fragments under the same rule (``FragmentTracker.blocked``).

Invariants: ``check`` never raises on any packet the router accepted; rules
are compiled once per configuration; states survive a reconfiguration (SEIL:
"config changes do not affect existing states"; ``clear_states`` drops them).
"""
from __future__ import annotations

import logging
import struct
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from passnat.config.model import Config, FilterAction
from passnat.filter.rules import (
    TCP_ESTABLISHED,
    TCP_NONE,
    TCP_SYNONLY,
    Point,
    Rule,
    View,
    compile_rule,
    point_lists,
)
from passnat.filter.state import FIN_ORIG, FIN_REPLY, Key, State, StateTable
from passnat.nat.flow import H_FC, H_OIF, H_SLOW, Hop
from passnat.nat.table import flow_key
from passnat.packet import icmp as icmpmod
from passnat.packet.ipv4 import FLAG_MF, OFFSET_MASK, ntoa, proto_name
from passnat.packet.tcp import ACK, FIN, RST, SYN

if TYPE_CHECKING:
    from passnat.nat.handlers.base import Pkt
    from passnat.nat.router import Router
    from passnat.nat.session import Session

#: rule verdicts remembered per configuration (cleared when full)
VERDICT_CACHE_MAX = 65536

_II = struct.Struct("!II")
_HH = struct.Struct("!HH")
_H = struct.Struct("!H")


class DefaultCounter:
    """The decisions no rule made: only blocks are counted (``filter default block``)."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0


class Fan:
    """A fast-path counter object feeding several counters (``fc.count += n``)."""

    __slots__ = ("targets",)

    def __init__(self, targets: tuple[Any, ...]):
        self.targets = targets

    @property
    def count(self) -> int:
        return 0

    @count.setter
    def count(self, n: int) -> None:
        for t in self.targets:
            t.count += n


Decider = Rule | State | DefaultCounter | None


def combine(counters: Iterable[Any]) -> Any:
    """One counter object for ``H_FC`` that counts on every one of ``counters``."""
    cs = tuple(c for c in counters if c is not None)
    if not cs:
        return None
    return cs[0] if len(cs) == 1 else Fan(cs)


def view_of(buf: bytearray | bytes, ihl: int, frag: int) -> View:
    """The filter's view of the IPv4 packet in ``buf`` (as it is now)."""
    proto = buf[9]
    src, dst = _II.unpack_from(buf, 12)
    options = bytes(buf[20:ihl]) if ihl > 20 else b""
    v = View(proto, src, dst, options=options)
    if frag & OFFSET_MASK:
        return v  # a later fragment carries no transport header
    avail = len(buf) - ihl
    if (proto == 6 or proto == 17) and avail >= 4:
        v.sport, v.dport = _HH.unpack_from(buf, ihl)
        v.ports = True
        if proto == 6 and avail >= 14:
            flags = buf[ihl + 13]
            v.tcp = TCP_SYNONLY if flags & SYN and not flags & ACK else TCP_ESTABLISHED
    elif proto == 1 and avail >= 1:
        t = buf[ihl]
        v.icmp_type = t
        if avail >= 6 and (t in icmpmod.QUERY_REQUESTS or t in icmpmod.QUERY_REPLIES):
            v.sport = v.dport = _H.unpack_from(buf, ihl + 4)[0]
    return v


def quoted_key(buf: bytearray | bytes, ihl: int) -> Key | None:
    """The flow key of the packet an ICMP error quotes (None when unreadable)."""
    off = ihl + 8
    if len(buf) < off + 20 or buf[off] >> 4 != 4:
        return None
    qihl = (buf[off] & 0x0F) * 4
    proto = buf[off + 9]
    src, dst = _II.unpack_from(buf, off + 12)
    l4 = off + qihl
    sport = dport = 0
    if (proto == 6 or proto == 17) and len(buf) >= l4 + 4:
        sport, dport = _HH.unpack_from(buf, l4)
    elif proto == 1 and len(buf) >= l4 + 6:
        t = buf[l4]
        if t in icmpmod.QUERY_REQUESTS or t in icmpmod.QUERY_REPLIES:
            sport = dport = _H.unpack_from(buf, l4 + 4)[0]
    return (proto, src, sport, dst, dport)


class Filter:
    """The compiled filter of one configuration, plus the states (kept across configurations)."""

    def __init__(self, router: Router, config: Config, previous: Filter | None = None):
        self.router = router
        self.default_pass = config.filter_default is FilterAction.PASS
        self.self_addrs = frozenset(router.local_addrs) | frozenset(router.nat_globals)
        prefixes = {name: itf.prefixes for name, itf in router.ifaces.items()}
        old = {r.name: r for r in previous.rules} if previous is not None else {}
        self.rules: list[Rule] = []
        for i, fr in enumerate(config.filters, 1):
            rule = compile_rule(fr, i, self.self_addrs, prefixes)
            prev = old.get(fr.name)
            if prev is not None and prev.config == fr:
                rule.count = prev.count  # an unchanged rule keeps its counter
            self.rules.append(rule)
        self.points = point_lists(self.rules, router.ifaces)
        self.active = not self.default_pass or any(r.config.enabled for r in self.rules)
        same_default = previous is not None and previous.default_pass == self.default_pass
        self.default: DefaultCounter = previous.default if previous is not None and same_default \
            else DefaultCounter()
        self.states: StateTable = previous.states if previous is not None else StateTable()
        self.states.on_remove = self._state_removed
        self.states.on_deadline = router.wake  # state deadlines: the router runs on_timer by then
        # rule verdicts by (point, packet fields the rules can test): the rules are fixed for
        # this Filter's life, so an ESP/GRE flow (always on the slow path) scans them once
        self._verdicts: dict[tuple[Any, ...], tuple[bool, Decider]] = {}
        self._frag_pkt: Pkt | None = None
        self._frag_counters: list[Any] = []
        #: whether the latest ``check`` passed the packet by a rule or a state (not by the
        #: default): the router lets untranslated traffic from a NAT interface inside only so
        self.passed_by_rule = False

    # ------------------------------------------------------------ decide

    def _decide(self, v: View, point: Point, now: float | None, icmp_quote: Key | None = None) -> tuple[bool, Decider]:
        """(passes, decider) at ``point``: states first, then rules in order, then the default."""
        key = v.key
        st = self.states.get(key, now)
        if st is not None and (key != st.key or point in st.origins):
            return True, st
        if icmp_quote is not None:
            qs = self.states.get(icmp_quote, now)
            if qs is not None:
                return True, qs
        ck = (point, key, v.ports, v.tcp, v.icmp_type, v.options)
        hit = self._verdicts.get(ck)
        if hit is None:
            hit = self._scan(v, point)
            if len(self._verdicts) >= VERDICT_CACHE_MAX:
                self._verdicts.clear()
            self._verdicts[ck] = hit
        return hit

    def _scan(self, v: View, point: Point) -> tuple[bool, Decider]:
        """The rules of ``point`` in order; the first that matches decides; else the default."""
        rules = self.points.get(point)
        if rules is None:
            rules = self.points[("", point[1])]
        for r in rules:
            if r.matches(v):
                return r.passes, r
        return (True, None) if self.default_pass else (False, self.default)

    def check(self, pkt: Pkt, iface: str, inbound: bool) -> bool:
        """The verdict for ``pkt`` at filter point (``iface``, in/out); counts, logs, makes states."""
        if not self.active:
            return True
        buf, ip = pkt.buf, pkt.ip
        v = view_of(buf, ip.ihl, ip.frag)
        quote = quoted_key(buf, ip.ihl) if v.proto == 1 and v.icmp_type in icmpmod.ERROR_TYPES else None
        point = (iface, inbound)
        now = pkt.now
        passes, d = self._decide(v, point, now, quote)
        self.passed_by_rule = passes and d is not None
        if d is not None:
            d.count += 1
        if isinstance(d, State):
            self._refresh(d, v, buf, ip.ihl, now)
        elif isinstance(d, Rule):
            if passes and d.config.state:
                self._make_state(d, v, point, now)
            if d.config.logging == "on":
                self._log(d.name, passes, v, point, now, logging.WARNING if not passes else logging.INFO)
        elif not passes:
            self._log("default", False, v, point, now, logging.DEBUG)
        if ip.frag & FLAG_MF and not ip.frag & OFFSET_MASK:
            self._note_first_fragment(pkt, d, passes)
        return passes

    # ------------------------------------------------------------ states

    def _state_ttl(self, rule: Rule, proto: int, sport: int, dport: int) -> tuple[float, bool, str]:
        """(idle time, fixed?, NAT timer class) of a state made by ``rule``."""
        klass = {6: "tcp-established", 1: "icmp", 50: "esp", 47: "gre"}.get(proto, "default")
        if proto == 17:
            klass = self.router.udp_class(sport, dport)
        if rule.config.state_ttl is not None:
            return float(rule.config.state_ttl), True, klass
        return self.router.timeout(klass), False, klass

    def _make_state(self, rule: Rule, v: View, point: Point, now: float) -> None:
        key = v.key
        st = self.states.get(key, now)
        if st is not None:  # the flow has a state: this point becomes one of its origins
            st.last = now
            if point not in st.origins:
                st.origins.add(point)
                if self.states.changed is not None:
                    self.states.changed.add(st)
                for s in self._sessions_of(key):
                    self._rebuild(s)
            return
        ttl, fixed, klass = self._state_ttl(rule, v.proto, v.sport, v.dport)
        st = self.states.add(key, rule=rule.name, origin=point, ttl=ttl, fixed=fixed, klass=klass, now=now)
        if st is None:
            self.router.count("filter_state_table_full")
            self.router.log_event("filter-state-full", now, f"filter: state table full ({self.states.maximum}): "
                                  f"rule {rule.name} passed a packet without making a state")
            return
        self.router.count("filter_states_created")
        if rule.config.logging in ("on", "state-only"):
            self.router.log_event(f"filter-state:{rule.name}", now,
                                  f"filter {rule.name}: state {st.id} made for {self._describe(v)} "
                                  f"{'in' if point[1] else 'out'} on {point[0]}", logging.INFO)
        for s in self._sessions_of(key):
            self._rebuild(s)

    def _refresh(self, st: State, v: View, buf: bytearray | bytes, ihl: int, now: float) -> None:
        st.last = now
        if v.proto != 6 or st.fixed or v.tcp == TCP_NONE:
            return
        flags = buf[ihl + 13]
        if flags & RST:
            self.states.set_ttl(st, self.router.timeout("closing"))
        elif flags & FIN:
            st.fins |= FIN_ORIG if v.key == st.key else FIN_REPLY
            if self.states.changed is not None:
                self.states.changed.add(st)
            if st.fins == FIN_ORIG | FIN_REPLY:
                self.states.set_ttl(st, self.router.timeout("closing"))
        elif flags & SYN and st.ttl != st.timer:
            st.fins = 0
            self.states.set_ttl(st, st.timer)  # the connection was reopened

    def _state_removed(self, st: State) -> None:
        for s in list(st.sessions) + self._sessions_of(st.key):
            self._rebuild(s)

    def _sessions_of(self, key: Key) -> list[Session]:
        """The NAT sessions of a TCP/UDP flow key (either direction, private-side view)."""
        proto, a, ap, b, bp = key
        if proto != 6 and proto != 17:
            return []
        tbl = self.router.table.out_flows[proto]
        found = []
        for k in (flow_key(a, b, ap, bp), flow_key(b, a, bp, ap)):
            s = tbl.get(k)
            if s is not None:
                found.append(s)
        return found

    def _rebuild(self, s: Session) -> None:
        if not s.alive:
            return
        handler = self.router.registry.by_name(s.handler)
        rebuild = getattr(handler, "rebuild", None)
        if rebuild is not None:
            rebuild(s)

    def restore_state(self, key: Key, rule: str, origins: list[Point], timer: float, fixed: bool, ttl: float,
                      klass: str, created: float, last: float, fins: int) -> State | None:
        """Make or update a state as the HA peer has it (passnat/ha); the flows it passes are
        decided again.  None when the table is full."""
        st = self.states.index.get(key)
        if st is None or st.key != key:
            st = self.states.add(key, rule=rule, origin=origins[0], ttl=timer, fixed=fixed, klass=klass,
                                 now=created)
            if st is None:
                return None
            self.states.created_total -= 1  # (made by the peer, counted there)
        st.origins.update(origins)
        st.timer, st.fixed, st.klass, st.fins = timer, fixed, klass, fins
        if last > st.last:
            st.last = last
        if ttl != st.ttl:
            self.states.set_ttl(st, ttl)
        for s in self._sessions_of(key):
            self._rebuild(s)
        return st

    def clear_states(self) -> int:
        """``clear filter state``: drop every state (flows are re-decided)."""
        return self.states.clear()

    # ------------------------------------------------------------ fast path

    def decorate(self, s: Session, o_hop: Hop, i_hop: Hop) -> tuple[Hop, Hop]:
        """Decide a TCP/UDP session's filter verdicts once for its fast-path packets: the
        session's two hops (flow.py) with H_FC and H_SLOW set."""
        if not self.active or (s.proto != 6 and s.proto != 17):
            return o_hop, i_hop
        tcp = TCP_ESTABLISHED if s.proto == 6 else TCP_NONE
        out_v = View(s.proto, s.in_addr, s.rem_addr, s.in_port, s.rem_port, ports=True, tcp=tcp)
        in_v = View(s.proto, s.rem_addr, s.in_addr, s.rem_port, s.in_port, ports=True, tcp=tcp)
        o_hop = self._decorate_flow(s, o_hop, out_v, ((s.lan_if or "", True), (o_hop[H_OIF], False)))
        i_hop = self._decorate_flow(s, i_hop, in_v, ((s.nat_if, True), (i_hop[H_OIF], False)))
        return o_hop, i_hop

    def _decorate_flow(self, s: Session, flow: Hop, v: View, points: tuple[Point, Point]) -> Hop:
        counters: list[Any] = []
        slow = False
        for point in points:
            passes, d = self._decide(v, point, None)
            if not passes or (isinstance(d, Rule) and d.config.state):
                slow = True  # blocked, or its first packet must make the state
                break
            if isinstance(d, State):
                d.link(s)
                counters.append(d.tally)  # (not the State: it lists the session, no cycle)
            else:
                counters.append(d)
        f = list(flow)
        f[H_FC] = None if slow else combine(counters)
        f[H_SLOW] = flow[H_SLOW] or slow
        return tuple(f)

    # ------------------------------------------------------------ fragments

    def _note_first_fragment(self, pkt: Pkt, d: Decider, passes: bool) -> None:
        if self._frag_pkt is not pkt:
            self._frag_pkt, self._frag_counters = pkt, []
        if d is not None:
            self._frag_counters.append(d)
        if not passes:
            fragments = self.router.fragments
            if fragments is not None:
                fragments.blocked(pkt, d)

    def fragment_counter(self, pkt: Pkt) -> Any:
        """The counter object of the decisions made on first fragment ``pkt`` (for its later fragments)."""
        if self._frag_pkt is not pkt:
            return None
        counters, self._frag_pkt, self._frag_counters = self._frag_counters, None, []
        return combine(counters)

    @property
    def needs_first_fragment(self) -> bool:
        """Whether a later fragment's fate depends on its first one's verdict."""
        return self.active

    # ------------------------------------------------------------ timers

    def next_deadline(self) -> float | None:
        return self.states.next_deadline()

    def on_timer(self, now: float) -> None:
        self.states.expire(now)

    # ------------------------------------------------------------ logging

    @staticmethod
    def _describe(v: View) -> str:
        name = proto_name(v.proto)
        if v.ports:
            return f"{name} {ntoa(v.src)}:{v.sport} > {ntoa(v.dst)}:{v.dport}"
        if v.proto == 1:
            return f"{name} type {v.icmp_type} {ntoa(v.src)} > {ntoa(v.dst)}"
        return f"{name} {ntoa(v.src)} > {ntoa(v.dst)}"

    def _log(self, name: str, passes: bool, v: View, point: Point, now: float, level: int) -> None:
        self.router.log_event(f"filter:{name}:{'pass' if passes else 'block'}", now,
                              f"filter {name}: {'pass' if passes else 'block'} "
                              f"{'in' if point[1] else 'out'} on {point[0]} {self._describe(v)}", level)

    # ------------------------------------------------------------ status

    def status(self, now: float) -> dict[str, Any]:
        from passnat.filter.status import status
        return status(self, now)
