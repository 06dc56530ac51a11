"""The lean path: the first packet of a plain outbound NAPT flow, in one function.

Most new sessions are the same case: a TCP SYN or a first UDP datagram from a
LAN host, routed out of a NAT interface, with no filter, no static or dynamic
NAT, no ALG and no fragmentation involved.  The full pipeline (router.py
``_slow``) handles it in some sixty short steps through generic layers
(parse, filter, route, the handler registry, the handler, the session
helpers, emit); ``LeanPath.first`` does exactly the same for that case in one
place, and is the reason new sessions are about three times faster
(docs/engine.md, ``make bench``).

Contract: ``first`` either returns the outputs the full path would return --
the same bytes, the same session (fields, mapping, timers, rewrites, index
keys), the same counters -- or returns None *without having changed
anything*, and the full path runs.  Every condition below mirrors a step of
the full path; where one cannot be decided cheaply (a filter is configured,
static or dynamic NAT on the interface, PPTP or IKE ports, a route that is
not a plain NAT egress, link padding, IP options, a limit reached) the
packet takes the full path, which also logs and counts whatever it decides.
tests/nat/test_lean.py runs the same packets through routers with and
without the lean path and compares everything.

ICMP echo, ESP, GRE and every ALG protocol stay on the full path.

passnat/_speedups.c ``lean`` is the same function in C (the C fast path and
the daemon's C receive loop call it when a packet misses the fast path);
``configure`` hands it ``c_state``, the router's dicts and the table's methods
it reads and calls, so the two make the same sessions (test_lean.py checks C,
Python and the full pipeline against each other).
"""
from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any

from passnat.config.model import UnicastRpf
from passnat.nat import tcp_track
from passnat.nat.actions import Output
from passnat.nat.drops import Drop
from passnat.nat.flow import U16, rewrite_deltas
from passnat.nat.session import UR_IN, Session
from passnat.nat.table import KEY
from passnat.packet.tcp import VALID_FLAGS, VALID_FLAGS_MASK, clamp_mss

if TYPE_CHECKING:
    from passnat.nat.router import Router

#: IPv4 header (no options) and the first 4 bytes of TCP/UDP: the ports
_HDR = struct.Struct("!BBHHHBBHIIHH")
_TTL_CS_SRC_PORT = struct.Struct("!BBHIIH")
_H = struct.Struct("!H")

SYN, ACK, FIN, RST = 0x02, 0x10, 0x01, 0x04
PPTP_PORT = 1723
IKE_PORT = 500  # UDP 500 sessions are watched by the ESP handler (tcpudp.slow_path)
NAT_T_PORT = 4500  # IKE's other port: udp timer from the start, never evicted (Router.udp_first_class)
_TCP_SYN_SENT = tcp_track.TcpState.SYN_SENT
_TCP_ESTABLISHED = tcp_track.TcpState.ESTABLISHED


class LeanPath:
    """Bound to one Router; ``configure`` is called with every configuration."""

    def __init__(self, router: Router):
        self.router = router
        self.ingress: frozenset[str] = frozenset()
        self.egress: dict[str, tuple[int, int, int | None, list[tuple[int, int]]]] = {}
        self.mss: dict[str, int | None] = {}
        self._hops: dict[tuple[str, str], Any] = {}
        self._slow_hops: dict[tuple[str, str], Any] = {}
        #: a first TCP segment's (state, timer class, timeout) by its flags; UDP's (class, timeout)
        self.tcp_first: list[tuple[Any, str, float]] = []
        self.udp = self.udp_dns = self.udp_ike = ("udp", 0.0)
        self.dns_ports: frozenset[int] = frozenset()
        self.c_state: tuple[Any, ...] | None = None  # what _speedups.c lean reads (L_*)
        self.strict_rpf = True

    def configure(self) -> None:
        """Which interfaces the lean path serves under the router's current configuration."""
        r = self.router
        assert r.static is not None
        self._hops = {}
        self.c_state = None
        self._slow_hops = {}
        if r.filter.active:
            self.ingress = frozenset()  # the filter runs per packet on the slow path
            self.egress = {}
            return
        self.ingress = frozenset(name for name in r.ifaces if name not in r.nat_ifaces)
        self.mss = {name: itf.mss for name, itf in r.ifaces.items()}
        self.tcp_first = []
        for flags in range(256):
            state = tcp_track.initial_state(flags)
            klass = tcp_track.TIMEOUT_CLASS[state]
            self.tcp_first.append((state, klass, r.timeout(klass)))
        from passnat.nat.router import DNS_PORTS  # (router.py imports this module)
        self.dns_ports = DNS_PORTS
        first = r.udp_first_class(0, 0)  # (a plain UDP flow's: udp-unreplied unless configured otherwise)
        self.udp = (first, r.timeout(first))
        self.udp_ike = ("udp", r.timeout("udp"))
        self.udp_dns = ("dns", r.timeout("dns"))
        self.strict_rpf = r.rpf is UnicastRpf.STRICT
        self.egress = {}
        static_ifs = {itf for itf, _ in r.static.static_out} | set(r.static.dyn_private)
        for name in r.nat_ifaces:
            g = r.globals.get(name)
            if g is None or name in static_ifs:
                continue
            self.egress[name] = (g, r.mtu(name), r.ifaces[name].mss, r.napt_private.get(name, []))
        t = r.table
        self.c_state = (self.ingress, self.egress, self.mss, r.local_addrs, r.broadcasts, r._hops, r.hop,
                        self.tcp_first, self.udp, self.udp_dns, self.dns_ports, self._hops, self._hop,
                        t.out_flows, r._counters, r, U16, t.admit, t.mapping_for, t.new_id, t.add, Session,
                        t.rng is None, "napt", "tcpudp", r.log_event, r.nat_globals,
                        self.udp_ike, self.strict_rpf, self._slow_hops, self._slow_hop,
                        t.mappings, t.pools, r._log_last)

    def _hop(self, route: tuple[str, str], slow: bool = False) -> Any:
        """The shared Hop (flow.py) of a fast-path direction that takes ``route`` (Router.hop);
        ``slow``: its packets go to the slow path (the inbound hop of a session awaiting its reply)."""
        r = self.router
        oif, nh = route
        h = r.intern_hop((oif, nh, r.mtu(oif), slow, None))
        (self._slow_hops if slow else self._hops)[route] = h
        return h

    def _slow_hop(self, route: tuple[str, str]) -> Any:
        """The shared slow Hop of ``route`` (a session's inbound hop until its first reply)."""
        return self._hop(route, True)

    def first(self, interface: str, packet: bytes, now: float) -> list[Output] | None:
        """The outputs for ``packet`` when it is the first of a plain NAPT flow; else None
        (nothing changed)."""
        n = len(packet)
        if n < 28 or interface not in self.ingress:
            return None
        vihl, _tos, length, _ident, frag, ttl, proto, _cs, src, dst, sport, dport = _HDR.unpack_from(packet)
        if vihl != 0x45 or length != n or frag & 0x3FFF or ttl <= 1:
            return None
        if proto == 6:
            if n < 40 or packet[32] >> 4 < 5 or sport == PPTP_PORT or dport == PPTP_PORT:
                return None
            flags = packet[33]
            if not VALID_FLAGS[flags & VALID_FLAGS_MASK]:
                return None  # the full path drops and counts it (tcp_invalid_flags)
        elif proto == 17:
            if sport == IKE_PORT or dport == IKE_PORT:
                return None
            flags = 0
        else:
            return None
        r = self.router
        if (src == 0 or src >> 24 == 127 or src >> 28 >= 0xE or dst >> 28 >= 0xE or dst == 0xFFFFFFFF
                or src in r.local_addrs or src in r.broadcasts or dst in r.local_addrs or dst in r.broadcasts
                or dst in r.nat_globals):  # (a global address: hairpinning or the router's, Router._reflect)
            return None
        if int.from_bytes(packet[:20], "big") % 0xFFFF:
            return None  # bad header checksum: the full path drops and counts it
        hop = r.hop(dst)
        if hop is None:
            return None
        oif, nh = hop
        eg = self.egress.get(oif)
        if eg is None or oif == interface:
            return None
        out_addr, mtu, oif_mss, private = eg
        for lo, hi in private:
            if lo <= src <= hi:
                break
        else:
            return None  # not a NAPT private address (SNAPT targets, plain routing): the full path
        limit = None
        if flags & SYN:
            in_mss = self.mss[interface]
            limit = in_mss if oif_mss is None else oif_mss if in_mss is None else min(in_mss, oif_mss)
        if n + (4 if limit is not None else 0) > mtu:
            return None  # fragmentation or ICMP: the full path
        t = r.table
        okey = packet[12:24]
        flows = t.out_flows[proto]
        if okey in flows or t.admit(src, src) is not None:
            return None
        in_hop = r.hop(src)
        if in_hop is None or (in_hop[0] != interface and self.strict_rpf):
            return None  # the reverse-path check (or no route back): the full path decides
        # ---- committed: the same session the full path makes ---------------------------
        sport, dport = U16[sport], U16[dport]
        m = t.mapping_for(proto, oif, src, sport, out_addr, *(_LOW if sport < 1024 else _HIGH),
                          keep=t.rng is None)
        if m is None:  # the range is full: refused here as the full path would (issue 13: refusals are cheap)
            r.log_event("no_port", now, f"NAPT: no free {proto} port on the global address")
            counters = r._counters
            counters["slow_path_packets"] += 1
            counters[_NO_PORT] += 1
            if now > r._clock:
                r._clock = now
            return []
        ur = UR_IN  # awaiting a reply: evictable, the reply comes to the slow path (tcpudp.awaits)
        if proto == 6:
            state, klass, timeout = self.tcp_first[flags]
        else:
            state = 0
            dns = self.dns_ports
            nat_t = sport == NAT_T_PORT or dport == NAT_T_PORT
            if nat_t:
                ur = 0  # IKE: never evicted (tcpudp.awaits)
            if sport in dns or dport in dns:
                klass, timeout = self.udp_dns
            elif nat_t:
                klass, timeout = self.udp_ike
            else:
                klass, timeout = self.udp
        oport = m.out_port
        s = Session(t.new_id(), proto, "napt", oif, src, sport, out_addr, oport, dst, dport, now,
                    timeout, klass, src, "tcpudp")
        s.mapping = m
        s.tcp_state = state
        s.ur = ur
        s.lan_if = in_hop[0]
        s.o_ipd, s.o_l4d, s.i_ipd, s.i_l4d = ipd, l4d, _, _ = rewrite_deltas(src, out_addr, sport, oport, True)
        s.o_hop = self._hops.get(hop) or self._hop(hop)
        if ur == UR_IN:  # its first reply comes to the slow path (tcpudp.replied)
            s.i_hop = self._slow_hops.get(in_hop) or self._slow_hop(in_hop)
        else:
            s.i_hop = self._hops.get(in_hop) or self._hop(in_hop)
        t.add(s, okey, KEY.pack(dst, out_addr, dport, oport))
        # ---- the packet: the fast path's rewrite, then MSS clamping (Router._emit) ----
        b = bytearray(packet)
        c = ((packet[10] << 8 | packet[11]) ^ 0xFFFF) + ipd
        c = ((c & 0xFFFF) + (c >> 16)) ^ 0xFFFF
        _TTL_CS_SRC_PORT.pack_into(b, 8, ttl - 1, proto, c, out_addr, dst, oport)
        co = 36 if proto == 6 else 26
        old = packet[co] << 8 | packet[co + 1]
        if old or proto == 6:
            c = (old ^ 0xFFFF) + l4d
            c = ((c & 0xFFFF) + (c >> 16)) ^ 0xFFFF
            _H.pack_into(b, co, c if c or proto == 6 else 0xFFFF)
        counters = r._counters
        counters["slow_path_packets"] += 1
        if limit is not None and clamp_mss(b, 20, limit):
            counters["tcp_mss_clamped"] += 1
        if now > r._clock:
            r._clock = now
        return [Output(oif, nh, bytes(b))]


_NO_PORT = Drop.NO_PORT.value
_LOW = (1, 1023)
_HIGH = (1024, 65535)
