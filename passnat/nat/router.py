"""The router core: sans-IO, one packet in, plain outputs back (R1-R8, R17, R18).

``Router.handle(interface, packet, now)`` takes one IPv4 packet that arrived on
a configuration interface and returns the ``Output`` list to send.  It never
opens a socket and never reads a clock: ``now`` is a parameter, and
``next_deadline()`` / ``on_timer(now)`` drive expiry.

Pipeline of one packet (the fast path is the first step; everything else is
the slow path):

  1. fast path: an IPv4 packet without options or fragmentation, TCP without
     SYN/FIN/RST (with ACK) or UDP, whose 12-byte (addresses, ports) key is in the
     ingress interface's flow table: one dict lookup, then the flow's
     precomputed rewrite in place with incremental checksums (RFC 1624).
  2. validate the IPv4 header (drop with a reason; never raise).
  3. inbound NAT on a NAT (WAN) interface: static NAT, then the protocol
     handler's session lookup, then dynamic NAT, then SNAPT (R2 priority).
  4. filter ``in`` on the ingress interface (post-NAT addresses; also for
     packets to the router itself, so ``dst self`` rules apply).
  5. local delivery (ping to the router's own addresses).
  6. route lookup; TTL check (ICMP time exceeded).
  7. filter ``out`` on the egress interface (pre-NAT addresses).
  8. outbound NAT when leaving through a NAT interface: static NAT, dynamic
     NAT, then the protocol handler (NAPT, ESP, PPTP, ...).
  9. TTL decrement, MSS clamping, MTU (fragment or ICMP fragmentation needed).

A packet dropped after a session was made for it rolls that session back.
"""
from __future__ import annotations

import logging
import random
import struct
from collections import Counter
from collections.abc import Iterable
from typing import Any

from passnat.config.model import Config, InboundRouting, PortAssignment, ReflectMode, RejectMode, UnicastRpf
from passnat.filter.engine import Filter
from passnat.nat.actions import Addr, Output
from passnat.nat.diagnose import Finding, VpnEvents, diagnose
from passnat.nat.drops import Drop
from passnat.nat.flow import H_FC, H_MTU, H_NH, H_OIF, H_SLOW, Hop
from passnat.nat.fragments import FragmentTracker
from passnat.nat.handlers.base import HELD, Fwd, Pkt, Registry, Verdict
from passnat.nat.lean import LeanPath
from passnat.nat.routing import DISCARD, RoutingTable
from passnat.nat.session import Record, Session
from passnat.nat.static import Snapt, StaticNat
from passnat.nat.table import SessionTable
from passnat.packet import icmp as icmpmod
from passnat.packet.checksum import TTL_DEC_DELTA, apply_delta, checksum
from passnat.packet.fragment import fragment
from passnat.packet.ipv4 import (
    PROTO_AH,
    PROTO_ESP,
    PROTO_GRE,
    PROTO_ICMP,
    PROTO_TCP,
    PROTO_UDP,
    HeaderError,
    check_options,
    ntoa,
    parse,
)
from passnat.packet.tcp import RST, SYN, VALID_FLAGS, VALID_FLAGS_MASK, build_rst, clamp_mss
from passnat.speedups import built as speedups_built
from passnat.speedups import module as speedups_module

log = logging.getLogger("passnat.nat")

_built = speedups_built()  # the optional C build of the fast path (passnat/_speedups.c); same bytes
if _built is not None:
    _built.configure(Session)  # where the fast path finds a session's slots
_speedups = speedups_module()  # None with PASSNAT_PURE=1
_c_fast = _speedups.fast if _speedups is not None else None

_H = struct.Struct("!H")
_I = struct.Struct("!I")
_TTL_CS = struct.Struct("!BBH")
_TTL_CS_SRC = struct.Struct("!BBHI")

#: built-in timers (SEIL: "a short time"; DNS and NTP 15 s) -- docs/timers.md
SHORT_TIMEOUT = 10.0
DNS_TIMEOUT = 15.0
DNS_PORTS = frozenset((53, 123))
#: UDP until its first reply, unless configured (conntrack: 30 s unreplied, 120 s assured)
UDP_UNREPLIED_TIMEOUT = 30.0
#: IKE's ports: their UDP sessions are never evicted and keep the udp timer from the start
IKE_PORTS = frozenset((500, 4500))

#: ICMP errors the router itself sends: token bucket (per second, burst)
ICMP_RATE = 200.0

_UNSOLICITED = {PROTO_TCP: Drop.NO_SESSION, PROTO_UDP: Drop.NO_SESSION, PROTO_ICMP: Drop.NO_SESSION,
                PROTO_ESP: Drop.ESP_UNSOLICITED, PROTO_GRE: Drop.GRE_UNSOLICITED,
                PROTO_AH: Drop.AH_NO_SESSION}
_UNSOLICITED_DROPS = frozenset(_UNSOLICITED.values()) | {Drop.OTHER_NO_SESSION}


class Router:
    """The NAT router engine.  See the module docstring for the pipeline."""

    def __init__(self, config: Config, *, seed: int | None = None, speedups: bool | None = None, lean: bool = True):
        """``speedups``: None runs the compiled fast path when it runs at all (``PASSNAT_PURE``
        unset), True runs it whenever it is built (tests comparing the two), False never."""
        self.rng = random.Random(seed)
        if speedups is None:
            self._cfast = _c_fast
        else:
            self._cfast = _built.fast if speedups and _built is not None else None
        self._counters: Counter[str] = Counter()
        self.table = SessionTable(maximum=config.nat.session.maximum,
                                  per_ip=config.nat.session.restricted_per_ip,
                                  per_private_ip=config.nat.session.private_ip_limit)
        self.table.on_remove = self._on_remove
        self.table.on_deadline = self.wake
        self.registry = Registry()
        self._deadline = float("inf")
        self._icmp_tokens = ICMP_RATE
        self._icmp_last = 0.0
        self._log_last: dict[str, float] = {}
        self.vpn_events = VpnEvents()
        self._clock = float("-inf")  # the latest `now` seen on the slow path or by a timer
        self.static: StaticNat | None = None
        self.fragments: FragmentTracker | None = None
        self.lean = LeanPath(self) if lean else None
        from passnat.nat.handlers import default_handlers
        for h in default_handlers():
            self.registry.register(h)
        self._apply(config)
        self.fragments = FragmentTracker(self)
        for h in self.registry:
            h.bind(self)

    # ================================================================ config

    def _apply(self, config: Config) -> None:
        self.config = config
        nat = config.nat
        self.routes = RoutingTable(config)
        self._hops: dict[int, tuple[str, str] | None] = {}
        self._hop_intern: dict[Hop, Hop] = {}
        self.ifaces = self.routes.ifaces
        self.timeouts = nat.timeouts
        self._timeout_cache: dict[str, float] = {}
        self.nat_ifaces = frozenset(i for i in nat.nat_interfaces() if i in self.ifaces)
        # global address per NAT interface: `nat napt add global`, else the interface's address
        self.globals: dict[str, int] = {}
        for itf in self.nat_ifaces:
            primary = self.ifaces[itf].primary
            if primary is not None:
                self.globals[itf] = primary
        for napt_global in nat.napt_global:
            self.globals[napt_global.interface] = int(napt_global.address)
        self.napt_private: dict[str, list[tuple[int, int]]] = {}
        for p in nat.napt_private:
            self.napt_private.setdefault(p.interface, []).append((p.addresses.first, p.addresses.last))
        old_static = self.static
        self.static = StaticNat(config, nat.timeouts.get("dynamic"))
        if old_static is not None:
            self.static.adopt(old_static)
        self.snapt = Snapt(config)
        reserved: dict[tuple[int, int], frozenset[int]] = {}
        for name in self.nat_ifaces:
            global_addr = self.globals.get(name)
            if global_addr is not None:
                for proto, ports in self.snapt.reserved_ports(name).items():
                    reserved[(proto, global_addr)] = ports
        t = self.table
        t.maximum = nat.session.maximum
        t.per_ip = nat.session.restricted_per_ip
        t.per_private_ip = nat.session.private_ip_limit
        t.rng = self.rng if nat.port_assignment is PortAssignment.RANDOM else None
        t.set_reserved(reserved)
        # addresses the router answers for (ping, ARP) and the NAT's global addresses
        self.local_addrs: dict[int, str] = {}
        for iface in self.ifaces.values():
            for a in iface.addrs:
                self.local_addrs.setdefault(a, iface.name)
        self.nat_globals: dict[int, str] = {g: i for i, g in self.globals.items()}
        for name, addrs in self.static.global_addresses().items():
            for a in addrs:
                self.nat_globals.setdefault(a, name)
        self.broadcasts = frozenset(b for itf in self.ifaces.values() for b in itf.broadcasts())
        #: reverse-path check (R28): strict / loose / none; NAT interface -> inside routing limited
        self.rpf = config.options.unicast_rpf
        self.inbound_nat_only = nat.inbound_routing is InboundRouting.NAT_ONLY
        self.filter = Filter(self, config, getattr(self, "filter", None))
        self._apply_answers(config)
        self._build_fast_tables()
        if self.lean is not None:
            self.lean.configure()

    def _apply_answers(self, config: Config) -> None:
        """Hairpinning (``nat reflect``, R26) and answers for closed services (``option ip reject``, R27)."""
        nat = config.nat
        if nat.reflect_mode is ReflectMode.ALL:
            reflect = {name for name in self.ifaces if name not in self.nat_ifaces}
        else:
            reflect = {name for name in nat.reflect if name in self.ifaces and name not in self.nat_ifaces}
        self.reflect_ifaces = frozenset(reflect)
        self.reject_mode = config.options.reject

    def _build_fast_tables(self) -> None:
        """Per ingress interface: (outbound?, 256-entry protocol -> flow dict list)."""
        self._fast: dict[str, tuple[bool, list[Any]]] = {}
        for name in self.ifaces:
            outbound = name not in self.nat_ifaces
            flows = self.table.out_flows if outbound else self.table.in_flows
            lst: list[Any] = [None] * 256
            lst[PROTO_TCP] = flows[PROTO_TCP]
            lst[PROTO_UDP] = flows[PROTO_UDP]
            lst[PROTO_ICMP] = flows[PROTO_ICMP]
            self._fast[name] = (outbound, lst)

    def reconfigure(self, config: Config) -> None:
        """Apply a new configuration, keeping every session that is still valid."""
        self._apply(config)
        assert self.fragments is not None
        self.fragments.configure()
        for h in self.registry:
            h.bind(self)
        for s in self.table.all():
            if s.nat_if not in self.nat_ifaces or not self._still_valid(s):
                self.table.remove(s)
                continue
            handler = self.registry.by_name(s.handler)
            if handler is not None and hasattr(handler, "rebuild"):
                handler.rebuild(s)
        self._deadline = float("-inf")  # recompute

    def _still_valid(self, s: Session) -> bool:
        if s.kind in ("static", "dynamic"):
            return True
        return self.globals.get(s.nat_if) == s.out_addr or s.out_addr in self.nat_globals

    # ============================================================ public API

    def handle(self, interface: str, packet: bytes, now: float) -> list[Output]:
        """Process one IPv4 packet that arrived on ``interface`` at time ``now``."""
        if now < self._deadline:
            cfast = self._cfast
            if cfast is None:
                return self._handle(interface, packet, now)
            if type(packet) is not bytes:
                packet = bytes(packet)  # (bytearray, memoryview: the C fast path takes bytes only)
            lean = self.lean
            out = cfast(self._fast, interface, packet, now, Output, lean.c_state if lean is not None else None)
            if out is not None:
                return out  # type: ignore[no-any-return]
            return self._slow(interface, packet, now)
        early = self.on_timer(now)
        out = self._handle(interface, packet, now)
        return early + out if early else out

    def _handle(self, interface: str, packet: bytes, now: float) -> list[Output]:
        if type(packet) is not bytes:
            packet = bytes(packet)
        ft = self._fast.get(interface)
        n = len(packet)
        if ft is not None and n >= 28 and packet[0] == 69:
            proto = packet[9]
            tbl = ft[1][proto]
            if tbl is not None:
                out = ft[0]
                if proto == 1:  # ICMP echo: the identifier is the "port" (both ways at bytes 24-25)
                    s = tbl.get(packet[12:20] + packet[24:26] + b"\0\0") if packet[20] == (8 if out else 0) \
                        and not packet[21] else None
                else:
                    s = tbl.get(packet[12:24])
                if s is not None:
                    hop = s.o_hop if out else s.i_hop
                    if (not hop[H_SLOW] and packet[8] > 1 and not (packet[6] & 63 or packet[7])
                            and n == (packet[2] << 8 | packet[3]) and n <= hop[H_MTU]
                            and (proto == 17 or (proto == 6 and n >= 40 and packet[33] & 0x17 == 0x10)
                                 or (proto == 1 and _icmp_sum_ok(packet, n)))
                            and not int.from_bytes(packet[:20], "big") % 0xFFFF):  # header checksum right
                        # ---- fast path: established TCP / UDP flow, ICMP echo (_speedups.c find_flow) --
                        b = bytearray(packet)
                        c = ((packet[10] << 8 | packet[11]) ^ 0xFFFF) + (s.o_ipd if out else s.i_ipd)
                        c = ((c & 0xFFFF) + (c >> 16)) ^ 0xFFFF
                        co = 36 if proto == 6 else 26 if proto == 17 else 22
                        old = packet[co] << 8 | packet[co + 1]
                        if out:
                            _TTL_CS_SRC.pack_into(b, 8, packet[8] - 1, proto, c, s.out_addr)
                            _H.pack_into(b, 24 if proto == 1 else 20, s.out_port)
                            l4d = s.o_l4d
                        else:
                            _TTL_CS.pack_into(b, 8, packet[8] - 1, proto, c)
                            _I.pack_into(b, 16, s.in_addr)
                            _H.pack_into(b, 24 if proto == 1 else 22, s.in_port)
                            l4d = s.i_l4d
                        if old or proto != 17:
                            c = (old ^ 0xFFFF) + l4d
                            c = ((c & 0xFFFF) + (c >> 16)) ^ 0xFFFF
                            _H.pack_into(b, co, c if c or proto != 17 else 0xFFFF)
                        s.last = now
                        fc = hop[H_FC]
                        if fc is not None:
                            fc.count += 1
                        return [Output(hop[H_OIF], hop[H_NH], bytes(b))]
        return self._slow(interface, packet, now)

    @property
    def fast_tables(self) -> dict[str, tuple[bool, list[Any]]]:
        """Per ingress interface: (outbound?, protocol -> {12 address/port bytes: flow}), the
        tables the fast path reads (the daemon's C ring path reads them too)."""
        return self._fast

    @property
    def deadline(self) -> float:
        """``handle`` first runs the timers due when ``now`` reaches this; below it a packet's
        fast path is all ``handle`` does, so a caller may take it without ``handle``."""
        return self._deadline

    def wake(self, deadline: float) -> None:
        """Modules call this when they start something that needs ``on_timer`` by ``deadline``."""
        if deadline < self._deadline:
            self._deadline = deadline

    def reinject(self, interface: str, packet: bytes, now: float) -> list[Output]:
        """Run a packet a handler held back through the pipeline again (released holds)."""
        return self._handle(interface, packet, now)

    def next_deadline(self) -> float | None:
        """When ``on_timer`` next has work (expiry, held packets), or None."""
        candidates = [d for d in self._deadlines() if d is not None]
        dl = min(candidates) if candidates else None
        self._deadline = dl if dl is not None else float("inf")
        return dl

    def _deadlines(self) -> Iterable[float | None]:
        yield self.table.next_deadline()
        assert self.static is not None
        yield self.static.next_deadline()
        assert self.fragments is not None
        yield self.fragments.next_deadline()
        yield self.filter.next_deadline()
        for h in self.registry:
            nd = getattr(h, "next_deadline", None)
            if nd is not None:
                yield nd()

    def on_timer(self, now: float) -> list[Output]:
        """Expire what is due at ``now``; returns packets released by timers."""
        if now > self._clock:
            self._clock = now
        assert self.fragments is not None
        out = self.fragments.on_timer(now)
        for h in self.registry:
            timer = getattr(h, "on_timer", None)
            if timer is not None:
                out.extend(timer(now))
        for s in self.table.expire(now):
            self.vpn_events.session_expired(s, now)
        self.filter.on_timer(now)
        assert self.static is not None
        self.static.expire(now)
        self.next_deadline()
        return out

    def counters(self) -> dict[str, int]:
        """Drop reasons and event counters, by name (every drop reason present, zero or not)."""
        out = {d.value: 0 for d in Drop}
        out.update(self._counters)
        out["sessions"] = len(self.table)
        out["sessions_created"] = self.table.created_total
        return out

    def filter_status(self, now: float) -> dict[str, Any]:
        """``show status filter`` data: rules with counters, default, dynamic states (passnat/filter/status.py)."""
        return self.filter.status(now)

    def sessions(self, now: float | None = None) -> list[Record]:
        """Every live session as a plain record (docs/engine.md).

        ``remaining`` is counted from ``now``, or without it from the latest
        time the router has seen (a packet on the slow path, a timer).
        """
        clock = self._clock if now is None else now
        recs = [self.session_record(s, clock) for s in self.table.all()]
        assert self.static is not None
        for b in self.static.bindings():
            rem = max(0.0, b.last + self.static.timeout - max(clock, b.last))
            recs.append(Record({"id": None, "type": "dynamic", "interface": b.nat_if, "protocol": "any",
                                "inside": ntoa(b.private), "inside_port": None, "outside": ntoa(b.global_),
                                "outside_port": None, "remote": None, "remote_port": None, "remaining": rem,
                                "state": "bound", "private": ntoa(b.private), "private_port": None,
                                "global": ntoa(b.global_), "global_port": None}))
        return recs

    def session_record(self, s: Session, now: float) -> Record:
        from passnat.packet.ipv4 import proto_name
        ported = s.proto in (6, 17, 1)
        rec = Record({
            "id": s.id, "type": s.kind, "interface": s.nat_if, "protocol": proto_name(s.proto),
            "protocol_number": s.proto,
            "inside": ntoa(s.in_addr), "inside_port": s.in_port if ported else None,
            "outside": ntoa(s.out_addr), "outside_port": s.out_port if ported else None,
            "remote": ntoa(s.rem_addr), "remote_port": s.rem_port if s.proto in (6, 17) else None,
            "remaining": s.remaining(max(now, s.last)),
            "timeout": s.timeout, "timer": s.klass, "created": s.created, "last": s.last,
        })
        if s.proto == PROTO_TCP:
            from passnat.nat.tcp_track import TcpState
            rec["state"] = TcpState(s.tcp_state).name.lower() if s.tcp_state else "unknown"
        if s.rem_addr in self.nat_globals:  # hairpinned: the far end is our own global address (R26)
            rec["reflect"] = True
        handler = self.registry.by_name(s.handler)
        describe = getattr(handler, "describe", None)
        if describe is not None:
            rec.update(describe(s))
        # SEIL's words for the same columns: private:port = global:port <-> remote:port
        rec["private"], rec["private_port"] = rec["inside"], rec["inside_port"]
        rec["global"], rec["global_port"] = rec["outside"], rec["outside_port"]
        return rec

    def clear_sessions(self, session_id: int | None = None) -> int:
        """``clear nat session {all|ID}``: the number of sessions removed."""
        if session_id is None:
            assert self.static is not None
            return self.table.clear() + self.static.clear()
        s = self.table.get(session_id)
        if s is None:
            return 0
        self.table.remove(s)
        return 1

    def diagnose(self, now: float) -> list[Finding]:
        """``passnat doctor`` (B3): VPN passthrough problems seen, each with its fix."""
        return diagnose(self, now)

    def export_state(self, now: float) -> dict[str, Any]:
        """Every session as JSON-able data, to survive a restart (R19; ``passnat.nat.persist``)."""
        from passnat.nat.persist import export_state
        return export_state(self, now)

    def import_state(self, state: dict[str, Any], now: float, elapsed: float = 0.0) -> int:
        """Restore ``export_state`` data after ``elapsed`` seconds down; returns sessions restored."""
        from passnat.nat.persist import import_state
        return import_state(self, state, now, elapsed)

    def owned_addresses(self) -> dict[str, set[str]]:
        """Addresses the router answers ARP for, per interface (own + NAT globals)."""
        out: dict[str, set[str]] = {name: {ntoa(a) for a in itf.addrs} for name, itf in self.ifaces.items()}
        for addr, itf in self.nat_globals.items():
            out.setdefault(itf, set()).add(ntoa(addr))
        return out

    # ============================================================ services

    def count(self, reason: Drop | str, n: int = 1) -> None:
        self._counters[reason.value if isinstance(reason, Drop) else reason] += n

    def log_event(self, key: str, now: float, message: str, level: int = logging.WARNING) -> None:
        """Log ``message`` at most once per second per ``key`` (time from the caller)."""
        last = self._log_last.get(key)
        if last is None or now - last >= 1.0 or now < last:
            self._log_last[key] = now
            log.log(level, message)

    def timeout(self, klass: str) -> float:
        """Seconds of the timer class ``klass`` (one shared float per class)."""
        value = self._timeout_cache.get(klass)
        if value is None:
            if klass == "closing" or klass == "icmp-answered":
                value = SHORT_TIMEOUT
            elif klass == "dns":
                value = DNS_TIMEOUT
            elif klass == "udp-unreplied":  # never longer than the timer a reply gives
                udp = self.timeout("udp")
                mine, theirs = self.timeouts.udp_unreplied, self.timeouts.udp
                value = min(float(mine), udp) if mine is not None else udp if theirs is not None \
                    else min(UDP_UNREPLIED_TIMEOUT, udp)
            else:
                value = float(self.timeouts.get(klass))
            self._timeout_cache[klass] = value
        return value

    def udp_class(self, port_a: int, port_b: int) -> str:
        """The timer class of a UDP session with these ports once it has seen a reply."""
        return "dns" if port_a in DNS_PORTS or port_b in DNS_PORTS else "udp"

    def udp_first_class(self, port_a: int, port_b: int) -> str:
        """The timer class of a new UDP session: ``udp-unreplied`` until its first reply when
        that timer is the shorter (not for DNS/NTP's own timer, nor for IKE)."""
        klass = self.udp_class(port_a, port_b)
        if (klass == "udp" and port_a not in IKE_PORTS and port_b not in IKE_PORTS
                and self.timeout("udp-unreplied") < self.timeout("udp")):
            return "udp-unreplied"
        return klass

    def hop(self, addr: int) -> tuple[str, str] | None:
        """(interface, next hop) towards ``addr``, or None (cached; rebuilt with the routes)."""
        cache = self._hops
        hit = cache.get(addr, False)
        if hit is not False:
            return hit  # type: ignore[return-value]
        hop = self.routes.lookup(addr)
        result = None if hop is None or hop is DISCARD else (hop[0], Addr(ntoa(hop[1])))
        if len(cache) >= 65536:
            cache.clear()
        cache[addr] = result
        return result

    def intern_hop(self, hop: Hop) -> Hop:
        """The one shared copy of a session's ``Hop`` tuple (flow.py): sessions with the same egress
        share it (rebuilt with the configuration)."""
        return self._hop_intern.setdefault(hop, hop)

    def mtu(self, iface: str) -> int:
        itf = self.ifaces.get(iface)
        return itf.mtu if itf is not None else 1500

    def is_napt_private(self, nat_if: str, addr: int) -> bool:
        for lo, hi in self.napt_private.get(nat_if, ()):  # noqa: SIM110 (a loop beats any() and a genexpr here)
            if lo <= addr <= hi:
                return True
        return False

    def _on_remove(self, s: Session) -> None:
        handler = self.registry.by_name(s.handler)
        if handler is not None:
            handler.on_remove(s)

    # ============================================================ slow path

    def _drop(self, reason: Drop, pkt: Pkt | None = None) -> list[Output]:
        self._counters[reason.value] += 1
        if pkt is not None:
            for s in pkt.created:
                self.table.remove(s)
            pkt.created.clear()
            if pkt.ip.frag & 0x2000 and not pkt.ip.frag & 0x1FFF and self.fragments is not None:
                self.fragments.first_dropped(pkt)  # its later fragments go at once (R27)
        return []

    def _slow(self, interface: str, packet: bytes, now: float) -> list[Output]:
        if self.lean is not None:
            out = self.lean.first(interface, packet, now)  # a new plain NAPT flow (lean.py)
            if out is not None:
                return out
        self._counters["slow_path_packets"] += 1
        if now > self._clock:
            self._clock = now
        if interface not in self.ifaces:
            return self._drop(Drop.UNKNOWN_INTERFACE)
        try:
            ip = parse(packet)
        except HeaderError as e:
            return self._drop(e.reason)
        src = ip.src
        if src == 0 or src >> 24 == 127 or src >> 28 >= 0xE or src in self.local_addrs or src in self.broadcasts:
            return self._drop(Drop.MARTIAN)
        if self.rpf is not UnicastRpf.NONE:
            back = self.hop(src)
            if back is None or (back[0] != interface and self.rpf is UnicastRpf.STRICT):
                return self._drop(Drop.SPOOFED)
        if ip.ihl > 20:
            reason = check_options(packet, ip.ihl)
            if reason is not None:
                return self._drop(reason)
        orig = packet if len(packet) == ip.length else packet[:ip.length]  # link padding cut
        pkt = Pkt(bytearray(orig), ip, interface, now, orig)
        if ip.frag & 0x1FFF:
            assert self.fragments is not None
            return self.fragments.later(pkt)
        reason = self._parse_l4(pkt)
        if reason is not None:
            return self._drop(reason)
        try:
            return self._process(pkt)
        except HeaderError as e:  # a handler found the payload malformed
            return self._drop(e.reason, pkt)
        except Exception:  # a bug must not take the router down: count, log, drop
            log.exception("internal error on a packet from %s (dropped)", interface)
            self.count("internal_error")
            for s in pkt.created:
                self.table.remove(s)
            return []

    @staticmethod
    def _parse_l4(pkt: Pkt) -> Drop | None:
        buf, l4, proto = pkt.buf, pkt.ip.ihl, pkt.ip.proto
        avail = len(buf) - l4
        first_frag_only = pkt.ip.frag & 0x2000  # a first fragment may be short of L4 data
        if proto == PROTO_TCP:
            if avail < 20:
                return None if first_frag_only and avail >= 4 else Drop.BAD_L4
            pkt.sport, pkt.dport = struct.unpack_from("!HH", buf, l4)
            pkt.flags = flags = buf[l4 + 13]
            if (buf[l4 + 12] >> 4) * 4 < 20:
                return Drop.BAD_L4
            if not VALID_FLAGS[flags & VALID_FLAGS_MASK]:
                return Drop.TCP_INVALID_FLAGS  # never a session (and never forwarded)
        elif proto == PROTO_UDP:
            if avail < 8:
                return Drop.BAD_L4
            pkt.sport, pkt.dport = struct.unpack_from("!HH", buf, l4)
        elif proto == PROTO_ICMP:
            if avail < 8:
                return Drop.BAD_L4
            pkt.icmp_type = buf[l4]
            if not first_frag_only and checksum(buf, l4) != 0:
                return Drop.BAD_L4
            if pkt.icmp_type in icmpmod.QUERY_REQUESTS or pkt.icmp_type in icmpmod.QUERY_REPLIES:
                pkt.sport = pkt.dport = (buf[l4 + 4] << 8) | buf[l4 + 5]
        return None

    def _process(self, pkt: Pkt) -> list[Output]:
        ip = pkt.ip
        fwd: Fwd | None = None
        if pkt.iface in self.nat_ifaces:
            verdict = self._nat_inbound(pkt)
            if isinstance(verdict, Drop):
                if verdict in _UNSOLICITED_DROPS:
                    if not self._filter(pkt, pkt.iface, inbound=True):
                        verdict = Drop.FILTER_BLOCK  # the filter sees untranslated packets too (SEIL)
                    elif self.reject_mode is RejectMode.ALL and ip.proto in (PROTO_TCP, PROTO_UDP):
                        out = self._reject(pkt)  # `option ip reject all`: a closed port answers
                        self._drop(verdict, pkt)
                        return out
                return self._drop(verdict, pkt)
            if verdict is HELD:
                return []
            fwd = verdict  # type: ignore[assignment]
        elif ip.dst in self.nat_globals and pkt.iface in self.reflect_ifaces:
            reflected = self._reflect(pkt)
            if reflected is not None:
                return reflected
        if not self._filter(pkt, pkt.iface, inbound=True):
            return self._drop(Drop.FILTER_BLOCK, pkt)
        by_rule = self.filter.passed_by_rule
        if fwd is None:
            if ip.dst in self.local_addrs or ip.dst in self.nat_globals:
                return self._local(pkt)
            if ip.dst in self.broadcasts or ip.dst == 0xFFFFFFFF or ip.dst >> 28 == 0xE:
                return self._drop(Drop.LOCAL_UNSUPPORTED)
        # route
        out_decided = False
        if fwd is not None and fwd.oif is not None:
            oif, nh = fwd.oif, fwd.nh or Addr(ntoa(ip.dst))
        else:
            hop = self.routes.lookup(ip.dst)
            if hop is None:
                out = self._icmp_error(pkt, icmpmod.DEST_UNREACH, icmpmod.NET_UNREACH)
                self._drop(Drop.NO_ROUTE, pkt)
                return out
            if hop is DISCARD:
                return self._drop(Drop.DISCARD_ROUTE, pkt)
            oif, nh = hop[0], Addr(ntoa(hop[1]))
            if (fwd is None and self.inbound_nat_only and not by_rule and pkt.iface in self.nat_ifaces
                    and oif not in self.nat_ifaces):
                # NAT interface -> inside without NAT (R28): only a filter pass rule (or its state),
                # at the `in` point or the `out` one, lets it through
                if not self._filter(pkt, oif, inbound=False):
                    return self._drop(Drop.FILTER_BLOCK, pkt)
                if not self.filter.passed_by_rule:
                    return self._drop(Drop.INBOUND_UNTRANSLATED, pkt)
                out_decided = True
        if ip.ttl <= 1:
            out = self._icmp_error(pkt, icmpmod.TIME_EXCEEDED, 0)
            self._drop(Drop.TTL_EXCEEDED, pkt)
            return out
        if not out_decided and not self._filter(pkt, oif, inbound=False):
            return self._drop(Drop.FILTER_BLOCK, pkt)
        if fwd is None and oif in self.nat_ifaces and pkt.iface != oif:
            verdict = self._nat_outbound(pkt, oif, nh)
            if isinstance(verdict, Drop):
                return self._drop(verdict, pkt)
            if verdict is HELD:
                return []
            fwd = verdict  # type: ignore[assignment]
        if ip.frag & 0x2000:  # a first fragment: later ones follow it (R21)
            return self._first_fragment(pkt, oif, nh, fwd)
        return self._emit(pkt, oif, nh, fwd)

    def _first_fragment(self, pkt: Pkt, oif: str, nh: str, fwd: Fwd | None) -> list[Output]:
        assert self.fragments is not None
        buf, orig = pkt.buf, pkt.orig
        if buf[12:16] != orig[12:16]:
            new_addr, outbound = _I.unpack_from(buf, 12)[0], True
        elif buf[16:20] != orig[16:20]:
            new_addr, outbound = _I.unpack_from(buf, 16)[0], False
        else:
            new_addr, outbound = None, False
        out = self._emit(pkt, oif, nh, fwd)
        if out:
            out.extend(self.fragments.first(pkt, oif, nh, new_addr, outbound))
        return out

    def forward_fragment(self, pkt: Pkt, new_addr: int | None, outbound: bool, oif: str | None,
                         nh: str | None, new_dst: int | None = None) -> list[Output]:
        """Forward a later fragment the way its first fragment went (R21); ``new_dst``: the
        destination a reflected datagram got besides its new source."""
        from passnat.nat.icmp_errors import rewrite_address
        if new_addr is not None:
            rewrite_address(pkt, new_addr, outbound=outbound)
        if new_dst is not None:
            rewrite_address(pkt, new_dst, outbound=False)
        if oif is None or nh is None:
            hop = self.routes.lookup(pkt.ip.dst)
            if hop is None or hop is DISCARD:
                return self._drop(Drop.NO_ROUTE)
            oif, nh = hop[0], Addr(ntoa(hop[1]))
        if pkt.ip.ttl <= 1:
            return self._drop(Drop.TTL_EXCEEDED)
        self.count("fragments_translated" if new_addr is not None else "fragments_forwarded")
        return self._emit(pkt, oif, nh, None)

    def fragment_needs_nat(self, pkt: Pkt) -> bool:
        """Whether a later fragment's treatment depends on its first one (NAT involved)."""
        if pkt.iface in self.nat_ifaces or pkt.ip.dst in self.nat_globals:
            return True
        hop = self.routes.lookup(pkt.ip.dst)
        return hop is not None and hop is not DISCARD and hop[0] in self.nat_ifaces

    def drop(self, reason: Drop) -> list[Output]:
        """Count a dropped packet (for modules outside the pipeline)."""
        return self._drop(reason)

    def _emit(self, pkt: Pkt, oif: str, nh: str, fwd: Fwd | None) -> list[Output]:
        buf = pkt.buf
        buf[8] -= 1
        _H.pack_into(buf, 10, apply_delta(_H.unpack_from(buf, 10)[0], TTL_DEC_DELTA))
        self._clamp_mss(pkt, oif)
        mtu = self.mtu(oif)
        if len(buf) > mtu:
            frags = self._fragment(pkt, oif, nh, mtu)
            if frags is None:
                return frags_needed(self, pkt, mtu)
            outs = frags
        else:
            outs = [Output(oif, nh, bytes(buf))]
        if fwd is not None and fwd.extra:
            outs.extend(fwd.extra)
        return outs

    # ------------------------------------------------------------- NAT steps

    def _nat_inbound(self, pkt: Pkt, *, reflect: bool = False) -> Verdict:
        """Translate a packet that arrived on a NAT interface, in R2 priority order.

        ``reflect``: the inbound step of a hairpinned packet (``_reflect``); what
        nothing claims is not an unsolicited packet from outside.
        """
        assert self.static is not None
        nat_if, dst, proto = pkt.iface, pkt.ip.dst, pkt.ip.proto
        private = self.static.static_private(nat_if, dst)
        if private is not None:
            return self._address_nat(pkt, private, outbound=False)
        handler = self.registry.pick(pkt, outbound=False)
        if handler is not None:
            verdict = handler.inbound(pkt)
            if verdict is not None:
                return verdict
        private = self.static.dynamic_private(nat_if, dst, pkt.now)
        if private is not None:
            return self._address_nat(pkt, private, outbound=False)
        if dst != self.globals.get(nat_if):
            return None  # the router's own or a transit address
        target = self.snapt.lookup(nat_if, proto, pkt.dport)
        if target is not None and handler is not None:
            verdict = handler.snapt_inbound(pkt, target)
            if verdict is not None:
                return verdict
        if proto == PROTO_ICMP and pkt.icmp_type in icmpmod.QUERY_REQUESTS:
            return None  # a ping to the router's global address
        if reflect:
            return None
        self.vpn_events.unsolicited_packet(proto, pkt.ip.src, pkt.sport if proto == PROTO_UDP else 0, pkt.now)
        return _UNSOLICITED.get(proto, Drop.OTHER_NO_SESSION)

    def _nat_outbound(self, pkt: Pkt, nat_if: str, nh: str) -> Verdict:
        """Translate a packet leaving through NAT interface ``nat_if`` (R2 priority)."""
        assert self.static is not None
        src, now = pkt.ip.src, pkt.now
        g = self.static.outbound(nat_if, src, now)
        if g is not None:
            return self._address_nat(pkt, g, outbound=True)
        napt = self.is_napt_private(nat_if, src)
        if self.static.is_dynamic_private(nat_if, src):
            g = self.static.bind(nat_if, src, now)
            if g is not None:
                self.wake(now + self.static.timeout)
                return self._address_nat(pkt, g, outbound=True)
            if not napt:
                return Drop.DYNAMIC_POOL_EMPTY
        handler = self.registry.pick(pkt, outbound=True)
        if handler is None:
            return None
        # a host outside every NAT range still has its SNAPT sessions translated,
        # but gets no new ones: its other traffic is routed untranslated
        create = napt or self.snapt.is_target(nat_if, src, pkt.ip.proto)
        return handler.outbound(pkt, nat_if, nh, create)

    # ------------------------------------------------------------- hairpinning

    def _reflect_target(self, pkt: Pkt) -> tuple[str, bool] | None:
        """Where a packet from an inside interface to a global address goes: (the NAT interface
        of that address, whether an inside host's NAPT mapping owns the port) when something
        there could own it (static or dynamic NAT, SNAPT, a mapping); None when it is the
        router's own (a ping, a closed port)."""
        assert self.static is not None
        dst = pkt.ip.dst
        nat_if = self.nat_globals.get(dst)
        if nat_if is None:
            return None
        if (nat_if, dst) in self.static.static_in or (nat_if, dst) in self.static.bind_in:
            return nat_if, False
        if dst != self.globals.get(nat_if):
            return None  # a dynamic-pool address bound to nobody
        proto = pkt.ip.proto
        if proto in (PROTO_TCP, PROTO_UDP):
            if self.snapt.lookup(nat_if, proto, pkt.dport) is not None:
                return nat_if, False
        elif proto == PROTO_ICMP:
            if pkt.icmp_type in icmpmod.QUERY_REQUESTS:  # SNAPT protocol icmp, or the router's own ping
                return (nat_if, False) if self.snapt.lookup(nat_if, PROTO_ICMP, 0) is not None else None
            if pkt.icmp_type not in icmpmod.QUERY_REPLIES:
                return (nat_if, False) if pkt.icmp_type in icmpmod.ERROR_TYPES else None
        else:
            return nat_if, False  # address-only protocols: tried (their sessions decide), undone if none
        pool = self.table.pools.get((proto, dst))
        return (nat_if, True) if pool is not None and pkt.dport in pool.used else None

    def _reflect(self, pkt: Pkt) -> list[Output] | None:
        """Hairpinning (R26; RFC 4787 REQ-9, RFC 5382 REQ-8, RFC 5508 REQ-7; SEIL ``nat reflect``).

        A packet from an inside interface to a global address is translated as
        if it left through that address's NAT interface (its source becomes the
        sender's own mapping, REQ-9b) and came straight back in (its destination
        becomes the inside host that owns the address/port): two ordinary
        sessions, so replies are translated the same way.  The filter sees it
        at every point it crosses: in on the ingress interface, out and in on
        the NAT interface, out on the egress.  Returns None when the address is
        the router's own (handled as local), else the outputs.  A packet to an
        inside host's mapping that does not accept the sender (its filtering)
        is dropped as one from outside would be; one that nothing inside owns
        is answered as the router's own (``_local``).
        """
        target = self._reflect_target(pkt)
        if target is None:
            return None
        nat_if, mapped = target
        ip, rx = pkt.ip, pkt.iface
        if not self._filter(pkt, rx, inbound=True):
            return self._drop(Drop.FILTER_BLOCK, pkt)
        if ip.ttl <= 1:
            out = self._icmp_error(pkt, icmpmod.TIME_EXCEEDED, 0)
            self._drop(Drop.TTL_EXCEEDED, pkt)
            return out
        if not self._filter(pkt, nat_if, inbound=False):
            return self._drop(Drop.FILTER_BLOCK, pkt)
        verdict = self._nat_outbound(pkt, nat_if, Addr(ntoa(ip.dst)))
        if isinstance(verdict, Drop):
            return self._drop(verdict, pkt)
        if verdict is HELD:
            return []
        if verdict is None:  # a sender in no NAT range has no mapping to be seen by
            return self._reflect_undo(pkt, [])
        out_fwd: Fwd = verdict  # type: ignore[assignment]
        pkt.hairpin = (rx, out_fwd.session)
        pkt.iface = nat_if
        try:
            verdict = self._nat_inbound(pkt, reflect=True)
        finally:
            pkt.iface = rx
            pkt.hairpin = None
        if verdict is None or (isinstance(verdict, Drop) and verdict in _UNSOLICITED_DROPS):
            if mapped:  # an inside host's mapping that does not accept this sender: dropped there,
                pkt.created.clear()  # as from outside -- the sender's own session stays (hole punching)
                return out_fwd.extra + self._drop(Drop.NO_SESSION, pkt)
            return self._reflect_undo(pkt, out_fwd.extra)
        if isinstance(verdict, Drop):
            out = self._drop(verdict, pkt)
            return out_fwd.extra + out
        if verdict is HELD:
            return out_fwd.extra
        in_fwd: Fwd = verdict  # type: ignore[assignment]
        in_fwd.extra[:0] = out_fwd.extra
        if not self._filter(pkt, nat_if, inbound=True):
            return in_fwd.extra + self._drop(Drop.FILTER_BLOCK, pkt)
        if in_fwd.oif is not None:
            oif, nh = in_fwd.oif, in_fwd.nh or Addr(ntoa(ip.dst))
        else:
            hop = self.hop(ip.dst)
            if hop is None:
                return in_fwd.extra + self._drop(Drop.NO_ROUTE, pkt)
            oif, nh = hop
        if not self._filter(pkt, oif, inbound=False):
            return in_fwd.extra + self._drop(Drop.FILTER_BLOCK, pkt)
        self.count("reflected_packets")
        if ip.frag & 0x2000:  # a first fragment: later ones get both addresses too
            assert self.fragments is not None
            buf = pkt.buf
            new_src, new_dst = _I.unpack_from(buf, 12)[0], _I.unpack_from(buf, 16)[0]
            out = self._emit(pkt, oif, nh, in_fwd)
            if out:
                out.extend(self.fragments.first(pkt, oif, nh, new_src, True, new_dst=new_dst))
            return out
        return self._emit(pkt, oif, nh, in_fwd)

    def _reflect_undo(self, pkt: Pkt, extra: list[Output]) -> list[Output]:
        """Nothing inside owns the destination: undo the outbound step and answer as the router."""
        for s in pkt.created:
            self.table.remove(s)
        pkt.created.clear()
        fresh = Pkt(bytearray(pkt.orig), parse(pkt.orig), pkt.iface, pkt.now, pkt.orig)
        self._parse_l4(fresh)
        self.count("reflect_no_owner")
        return extra + self._local(fresh)

    def _address_nat(self, pkt: Pkt, new: int, *, outbound: bool) -> Fwd:
        """Static/dynamic NAT: rewrite one address (and any quoted ICMP header)."""
        from passnat.nat.icmp_errors import rewrite_address
        rewrite_address(pkt, new, outbound=outbound)
        if outbound:
            return Fwd()
        hop = self.hop(new)
        return Fwd(oif=hop[0], nh=hop[1]) if hop else Fwd()

    # ------------------------------------------------------------- local

    def _local(self, pkt: Pkt) -> list[Output]:
        ip = pkt.ip
        if ip.proto == PROTO_ICMP and pkt.icmp_type == icmpmod.ECHO_REQUEST and not ip.is_fragment:
            reply = icmpmod.build_echo_reply(pkt.buf, ip.ihl)
            hop = self.hop(ip.src)
            if hop is None:
                return self._drop(Drop.NO_ROUTE, pkt)
            self.count("local_echo_replies")
            return [Output(hop[0], hop[1], reply)]
        mode = self.reject_mode
        out = self._reject(pkt) if mode is RejectMode.ALL or (
            mode is RejectMode.LAN and pkt.iface not in self.nat_ifaces) else []
        self._drop(Drop.LOCAL_UNSUPPORTED, pkt)
        return out

    def _reject(self, pkt: Pkt) -> list[Output]:
        """Answer a packet for a service the router does not offer (R27; RFC 1812 §4.3.2.8 rate).

        TCP gets a RST (RFC 9293 §3.10.7.1), UDP an ICMP port unreachable, other
        protocols an ICMP protocol unreachable, each from the address the packet
        was sent to; ICMP, later fragments and broadcasts get nothing.
        """
        ip = pkt.ip
        if ip.frag & 0x1FFF or ip.dst in self.broadcasts or ip.dst == 0xFFFFFFFF or ip.dst >> 28 == 0xE:
            return []
        proto = ip.proto
        if proto == PROTO_ICMP:
            return []
        if proto == PROTO_TCP:
            if pkt.flags & RST:
                return []
            rst = build_rst(pkt.orig, ip.ihl)
            hop = self.hop(_I.unpack_from(pkt.orig, 12)[0])
            if rst is None or hop is None:
                return []
            if not self._answer_token(pkt.now):
                self.count("tcp_rst_rate_limited")
                return []
            self.count("tcp_rst_sent")
            return [Output(hop[0], hop[1], rst)]
        code = icmpmod.PORT_UNREACH if proto == PROTO_UDP else icmpmod.PROTO_UNREACH
        return self._icmp_error(pkt, icmpmod.DEST_UNREACH, code, src=_I.unpack_from(pkt.orig, 16)[0])

    def _answer_token(self, now: float) -> bool:
        """One token of the bucket that limits what the router itself sends (ICMP errors, RSTs)."""
        elapsed = now - self._icmp_last
        self._icmp_last = now
        if elapsed > 0:
            self._icmp_tokens = min(ICMP_RATE, self._icmp_tokens + elapsed * ICMP_RATE)
        if self._icmp_tokens < 1:
            return False
        self._icmp_tokens -= 1
        return True

    # ------------------------------------------------------------- ICMP errors

    def _icmp_error(self, pkt: Pkt, icmp_type: int, code: int, mtu: int = 0,
                    src: int | None = None) -> list[Output]:
        """An ICMP error about ``pkt`` (as received) to its sender, rate limited.

        ``src``: the error's source address (default: the router's address on
        the interface it leaves by).
        """
        if not icmpmod.error_allowed(pkt.orig):
            return []
        if not self._answer_token(pkt.now):
            self.count("icmp_errors_rate_limited")
            return []
        itf = self.ifaces[pkt.iface]
        hop = self.hop(pkt.ip.src)
        if src is None:
            src = itf.primary
            if hop is not None and src is not None and hop[0] != pkt.iface:
                src = self.ifaces[hop[0]].primary or src
        if hop is None or src is None:
            return []
        self.count(f"icmp_sent_type{icmp_type}_code{code}")
        return [Output(hop[0], hop[1], icmpmod.build_error(src=src, orig=pkt.orig, icmp_type=icmp_type,
                                                           code=code, mtu=mtu))]

    # ------------------------------------------------------------- hooks

    def _filter(self, pkt: Pkt, iface: str, *, inbound: bool) -> bool:
        return self.filter.check(pkt, iface, inbound)

    def _clamp_mss(self, pkt: Pkt, oif: str) -> None:
        """R24: clamp the MSS of SYNs crossing an interface with ``tcp-mss``."""
        ip = pkt.ip
        if ip.proto != PROTO_TCP or not pkt.flags & SYN or ip.frag & 0x3FFF:
            return
        limits = [m for m in (self.ifaces[pkt.iface].mss, self.ifaces[oif].mss) if m is not None]
        if limits and len(pkt.buf) >= ip.ihl + 20 and clamp_mss(pkt.buf, ip.ihl, min(limits)):
            self.count("tcp_mss_clamped")

    def _fragment(self, pkt: Pkt, oif: str, nh: str, mtu: int) -> list[Output] | None:
        """R23: fragment for the egress MTU (None when DF forbids it)."""
        frags = fragment(pkt.buf, mtu)
        if frags is None:
            return None
        self.count("fragments_made", len(frags))
        return [Output(oif, nh, f) for f in frags]


def _icmp_sum_ok(packet: bytes, n: int) -> bool:
    """The ICMP checksum of ``packet`` (IPv4 header of 20 bytes) is right (RFC 1071: the data
    as big-endian 16-bit words sums to 0xFFFF; the big integer modulo 0xFFFF is that sum)."""
    x = int.from_bytes(packet[20:] + b"\0" if n & 1 else packet[20:], "big")
    return x != 0 and x % 0xFFFF == 0


def frags_needed(router: Router, pkt: Pkt, mtu: int) -> list[Output]:
    pkt.ip.src = _I.unpack_from(pkt.orig, 12)[0]  # R23: routed back to the pre-NAT sender
    out = router._icmp_error(pkt, icmpmod.DEST_UNREACH, icmpmod.FRAG_NEEDED, mtu=mtu)
    router._drop(Drop.FRAG_NEEDED, pkt)
    return out


__all__ = ["Router", "Output"]
