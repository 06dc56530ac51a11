"""ICMP NAPT (R7): query identifiers like ports, and translation of ICMP errors.

Queries (echo, timestamp, information, address mask): an outbound request
makes a session on the inside host's endpoint-independent mapping of its
identifier; the reply finds it by (remote, global, outside id) and switches
it to the short "answered" timer (SEIL), where it stays: later requests and
replies of the same id refresh it (a ping every second keeps it), and once
answered, echo requests and replies take the fast path (the inbound direction
is slow only until the first reply, which changes the timer).  A SNAPT ``protocol icmp``
rule sends queries to the global address to its inside host.  Errors: the quoted header names the
session (see ``icmp_errors``); protocols other than TCP, UDP and ICMP are
looked up through their own handler's ``error_session``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from passnat.nat.drops import Drop
from passnat.nat.flow import H_NH, H_OIF, rewrite
from passnat.nat.handlers.base import Fwd, Pkt, Priority, Verdict
from passnat.nat.handlers.common import admit, install_port_flows, make_session, restore_port_session
from passnat.nat.icmp_errors import Quoted, quoted, rewrite_address, translate_error
from passnat.nat.session import UR_IN, Session
from passnat.nat.static import SnaptTarget
from passnat.nat.table import flow_key
from passnat.packet import icmp as icmpmod
from passnat.packet.ipv4 import PROTO_ICMP, PROTO_TCP, PROTO_UDP

if TYPE_CHECKING:
    from passnat.nat.router import Router


ANSWERED = "icmp-answered"


class IcmpHandler:
    name = "icmp"
    protocols = (PROTO_ICMP,)
    priority = Priority.PROTOCOL

    def bind(self, router: Router) -> None:
        self.router = router

    def matches(self, pkt: Pkt, outbound: bool) -> bool:
        return True

    # ------------------------------------------------------------ queries

    def outbound(self, pkt: Pkt, nat_if: str, nh: str, create: bool) -> Verdict:
        t = pkt.icmp_type
        if t in icmpmod.ERROR_TYPES:
            return self._error(pkt, outbound=True)
        if t not in icmpmod.QUERY_REQUESTS and t not in icmpmod.QUERY_REPLIES:
            return Drop.ICMP_UNSUPPORTED if create else None
        ip = pkt.ip
        s = self.router.table.out_flows[PROTO_ICMP].get(flow_key(ip.src, ip.dst, pkt.sport, 0))
        if s is not None:
            s.last = pkt.now
            return self._translate(pkt, s, outbound=True)
        if t in icmpmod.QUERY_REPLIES and self.router.snapt.is_target(nat_if, ip.src, PROTO_ICMP):
            g = self.router.globals.get(nat_if)  # the answer of a query SNAPT forwarded to this host
            if g is not None:
                rewrite_address(pkt, g, outbound=True)
                return Fwd()
        if not create or t not in icmpmod.QUERY_REQUESTS:
            return None
        reason = admit(self.router, pkt, ip.src)
        if reason is not None:
            return reason
        out_addr = self.router.globals.get(nat_if)
        if out_addr is None:
            return Drop.NO_PORT
        m = self.router.table.mapping_for(PROTO_ICMP, nat_if, ip.src, pkt.sport, out_addr, 0, 65535,
                                          keep=self.router.table.rng is None)
        if m is None:
            return Drop.NO_PORT
        s = make_session(self.router, pkt, kind="napt", nat_if=nat_if, in_addr=ip.src, in_port=pkt.sport,
                         out_addr=out_addr, out_port=m.out_port, rem_addr=ip.dst, rem_port=0,
                         klass="icmp", handler=self.name, mapping=m, ur=UR_IN)
        install_port_flows(self.router, s)
        return self._translate(pkt, s, outbound=True)

    def inbound(self, pkt: Pkt) -> Verdict:
        t = pkt.icmp_type
        if t in icmpmod.ERROR_TYPES:
            return self._error(pkt, outbound=False)
        if t not in icmpmod.QUERY_REPLIES and t not in icmpmod.QUERY_REQUESTS:
            return None
        ip = pkt.ip
        s = self.router.table.in_flows[PROTO_ICMP].get(flow_key(ip.src, ip.dst, pkt.sport, 0))
        if s is None or pkt.is_hairpin_source(s):
            return None  # (a reflected query finds its own sender's session: never handed back)
        s.last = pkt.now
        if s.ur:
            self.router.table.replied(s)  # two-way: never evicted (table.py make_room)
        if t in icmpmod.QUERY_REPLIES and s.klass != ANSWERED:
            self.router.table.set_timeout(s, self.router.timeout(ANSWERED), ANSWERED)
            install_port_flows(self.router, s)  # answered: the replies' fast path opens
        return self._translate(pkt, s, outbound=False)

    def snapt_inbound(self, pkt: Pkt, target: SnaptTarget) -> Verdict:
        """``nat snapt add protocol icmp forward <ip>``: queries to the global address go to that
        host, address-only (identifiers unchanged, no session: a query to the global address
        from the global address itself -- hairpinned -- would need two sessions under one key);
        its answers leave with the global address (``outbound``).  Without the rule the router
        answers them itself."""
        if pkt.icmp_type not in icmpmod.QUERY_REQUESTS:
            return None
        rewrite_address(pkt, target.addr, outbound=False)
        self.router.count("icmp_snapt_forwarded")
        hop = self.router.hop(target.addr)
        return Fwd(oif=hop[0], nh=hop[1]) if hop else Fwd()

    def _translate(self, pkt: Pkt, s: Session, outbound: bool) -> Fwd:
        rewrite(pkt.buf, pkt.ip.ihl, PROTO_ICMP, s, outbound)
        if outbound:
            pkt.ip.src = s.out_addr
            return Fwd(session=s)
        pkt.ip.dst = s.in_addr
        hop = s.i_hop
        assert hop is not None
        return Fwd(oif=hop[H_OIF], nh=hop[H_NH], session=s)

    def rebuild(self, s: Session) -> None:
        install_port_flows(self.router, s)

    def restore(self, s: Session) -> bool:
        return restore_port_session(self.router, s, self.rebuild)

    def on_remove(self, s: Session) -> None:
        return None

    # ------------------------------------------------------------- errors

    def _error(self, pkt: Pkt, *, outbound: bool) -> Verdict:
        q = quoted(pkt)
        if isinstance(q, Drop):
            return q
        found = self.error_session(q, outbound)
        if found is None:
            return Drop.ICMP_ERROR_NO_SESSION if not outbound else None
        s, port = found
        if outbound:
            translate_error(pkt, q, outbound=True, addr=s.out_addr, port=port)
            self.router.count("icmp_errors_translated")
            return Fwd(session=s)
        translate_error(pkt, q, outbound=False, addr=s.in_addr, port=port)
        self.router.count("icmp_errors_translated")
        hop = self.router.hop(s.in_addr)
        return Fwd(oif=hop[0], nh=hop[1], session=s) if hop else Fwd(session=s)

    def error_session(self, q: Quoted, outbound: bool) -> tuple[Session, int | None] | None:
        """The session a quoted packet belongs to, and the port/id to put back."""
        table = self.router.table
        if q.proto in (PROTO_TCP, PROTO_UDP) or (q.proto == PROTO_ICMP and q.is_query):
            if not outbound:
                # the quote is a packet we sent: (global:oport -> remote:rport)
                if q.proto == PROTO_ICMP:
                    s = table.in_flows[q.proto].get(flow_key(q.dst, q.src, q.sport, 0))
                else:
                    s = table.in_flows[q.proto].get(flow_key(q.dst, q.src, q.dport, q.sport))
                if s is None:
                    return None
                return s, s.in_port
            # an inside host quotes a packet we let in: (remote:rport -> inside:iport)
            if q.proto == PROTO_ICMP:
                s = table.out_flows[q.proto].get(flow_key(q.dst, q.src, q.sport, 0))
            else:
                s = table.out_flows[q.proto].get(flow_key(q.dst, q.src, q.dport, q.sport))
            if s is None:
                return None
            return s, s.out_port
        for h in self.router.registry.for_proto(q.proto):
            lookup = getattr(h, "error_session", None)
            if lookup is not None and h is not self:
                found = lookup(q, outbound)
                if found is not None:
                    return found  # type: ignore[no-any-return]
        return None
