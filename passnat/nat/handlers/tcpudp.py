"""TCP and UDP NAPT (R4, R5): endpoint-independent mappings, per-5-tuple sessions.

Outbound: the session of the 5-tuple, else a new one on the inside
endpoint's mapping (same outside port for every destination while the mapping
lives; the inside port is kept when free).  Inbound: only the 5-tuple of an
existing session passes (unsolicited packets are dropped by the router), or a
SNAPT rule makes a session towards the inside server.  TCP sessions are
tracked (``tcp_track``); only SYN/FIN/RST segments reach this code for
established sessions, the rest take the router's fast path.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from passnat.nat import tcp_track
from passnat.nat.drops import Drop
from passnat.nat.flow import H_NH, H_OIF, rewrite
from passnat.nat.handlers.base import HELD, Fwd, Pkt, Priority, Verdict
from passnat.nat.handlers.common import admit, install_port_flows, make_session, restore_port_session
from passnat.nat.ports import port_range
from passnat.nat.session import UR_IN, UR_OUT, Session
from passnat.nat.static import SnaptTarget
from passnat.nat.table import flow_key
from passnat.packet.ipv4 import PROTO_TCP, PROTO_UDP

IKE_PORT = 500
IKE_PORTS = (500, 4500)  # their sessions are never evicted (router.IKE_PORTS)

if TYPE_CHECKING:
    from passnat.nat.router import Router


class TcpUdpHandler:
    name = "tcpudp"
    protocols: tuple[int, ...] = (6, 17)
    priority = Priority.PROTOCOL

    def bind(self, router: Router) -> None:
        self.router = router

    def matches(self, pkt: Pkt, outbound: bool) -> bool:
        return True

    # ------------------------------------------------------------ sessions

    def _klass(self, s: Session) -> str:
        if s.proto == PROTO_TCP:
            return tcp_track.TIMEOUT_CLASS[tcp_track.TcpState(s.tcp_state)]
        return self.router.udp_class(s.in_port, s.rem_port)

    def track(self, s: Session, pkt: Pkt, outbound: bool) -> None:
        """Refresh, note the first reply, and follow TCP state (the timer class follows the state)."""
        s.last = pkt.now
        if s.ur and outbound == (s.ur == UR_OUT):
            self.replied(s)
        if s.proto != PROTO_TCP or not pkt.flags & (tcp_track.SYN | tcp_track.FIN | tcp_track.RST):
            return
        state, fins = tcp_track.next_state(tcp_track.TcpState(s.tcp_state), s.fins, pkt.flags, outbound)
        if fins != s.fins:
            s.fins = fins
            if state == s.tcp_state:
                self.router.table.touched(s)  # (for HA sync: a FIN seen with no change of state)
        if state != s.tcp_state:
            s.tcp_state = state
            klass = self._klass(s)
            self.router.table.set_timeout(s, self.router.timeout(klass), klass)

    def replied(self, s: Session) -> None:
        """The first packet from the other side: not evictable any more, the reply's timer,
        and the replies' fast path opens (it was closed to see this packet)."""
        self.router.table.replied(s)
        if s.klass == "udp-unreplied":
            klass = self._klass(s)
            self.router.table.set_timeout(s, self.router.timeout(klass), klass)
        self.install(s)

    def _new(self, pkt: Pkt, *, kind: str, nat_if: str, in_addr: int, in_port: int, out_addr: int,
             out_port: int, rem_addr: int, rem_port: int, mapping: Any = None) -> Session:
        state: int
        if pkt.ip.proto == PROTO_TCP:
            tcp_state = tcp_track.initial_state(pkt.flags)
            state, klass = tcp_state, tcp_track.TIMEOUT_CLASS[tcp_state]
        else:
            state = 0
            klass = self.router.udp_first_class(in_port, rem_port)
        s = make_session(self.router, pkt, kind=kind, nat_if=nat_if, in_addr=in_addr, in_port=in_port,
                         out_addr=out_addr, out_port=out_port, rem_addr=rem_addr, rem_port=rem_port,
                         klass=klass, handler=self.name, mapping=mapping, ur=self.awaits(pkt, kind, in_port, rem_port))
        s.tcp_state = state
        self.install(s)
        return s

    @staticmethod
    def awaits(pkt: Pkt, kind: str, in_port: int, rem_port: int) -> int:
        """``Session.ur`` of a new session: NAPT sessions await a reply from outside (and may be
        evicted until then), SNAPT ones from the inside server; IKE's are not tracked."""
        if pkt.ip.proto == PROTO_UDP and (in_port in IKE_PORTS or rem_port in IKE_PORTS):
            return 0
        return UR_IN if kind == "napt" else UR_OUT

    def install(self, s: Session) -> None:
        install_port_flows(self.router, s, slow=self.slow_path(s))

    def slow_path(self, s: Session) -> bool:
        """True when every packet of ``s`` must come to this handler.

        IKE on UDP 500 is watched for the ESP handler's pairing hints (its
        traffic is a few packets per rekey).
        """
        return s.proto == PROTO_UDP and IKE_PORT in (s.in_port, s.rem_port)

    rebuild = install

    def restore(self, s: Session) -> bool:
        """Re-create a saved session (``passnat.nat.persist``) with its mapping and flows."""
        return restore_port_session(self.router, s, self.install)

    # ------------------------------------------------------------ outbound

    def outbound(self, pkt: Pkt, nat_if: str, nh: str, create: bool) -> Verdict:
        ip = pkt.ip
        s = self.router.table.out_flows[ip.proto].get(flow_key(ip.src, ip.dst, pkt.sport, pkt.dport))
        if s is not None:
            self.track(s, pkt, outbound=True)
            return self.forward(pkt, s, outbound=True)
        if not create:
            return None
        return self.create_outbound(pkt, nat_if)

    def create_outbound(self, pkt: Pkt, nat_if: str) -> Verdict:
        router, ip = self.router, pkt.ip
        reason = admit(router, pkt, ip.src)
        if reason is not None:
            return reason
        out_addr = router.globals.get(nat_if)
        if out_addr is None:
            return Drop.NO_PORT
        lo, hi = port_range(pkt.sport)
        keep = router.table.rng is None
        m = router.table.mapping_for(ip.proto, nat_if, ip.src, pkt.sport, out_addr, lo, hi, keep=keep)
        if m is None:
            router.log_event("no_port", pkt.now, f"NAPT: no free {ip.proto} port on the global address")
            return Drop.NO_PORT
        s = self._new(pkt, kind="napt", nat_if=nat_if, in_addr=ip.src, in_port=pkt.sport,
                      out_addr=m.out_addr, out_port=m.out_port, rem_addr=ip.dst, rem_port=pkt.dport, mapping=m)
        return self.forward(pkt, s, outbound=True)

    # ------------------------------------------------------------- inbound

    def inbound(self, pkt: Pkt) -> Verdict:
        ip = pkt.ip
        s = self.router.table.in_flows[ip.proto].get(flow_key(ip.src, ip.dst, pkt.sport, pkt.dport))
        if s is None or pkt.is_hairpin_source(s):
            return None
        self.track(s, pkt, outbound=False)
        return self.forward(pkt, s, outbound=False)

    def snapt_inbound(self, pkt: Pkt, target: SnaptTarget) -> Verdict:
        reason = admit(self.router, pkt, target.addr)
        if reason is not None:
            return reason
        ip = pkt.ip
        s = self._new(pkt, kind="snapt", nat_if=pkt.iface, in_addr=target.addr, in_port=target.port,
                      out_addr=ip.dst, out_port=pkt.dport, rem_addr=ip.src, rem_port=pkt.sport)
        return self.forward(pkt, s, outbound=False)

    # ------------------------------------------------------------ rewrite

    def translate(self, pkt: Pkt, s: Session, outbound: bool) -> Fwd:
        rewrite(pkt.buf, pkt.ip.ihl, pkt.ip.proto, s, outbound)
        if outbound:
            pkt.ip.src, pkt.sport = s.out_addr, s.out_port
            return Fwd(session=s)
        pkt.ip.dst, pkt.dport = s.in_addr, s.in_port
        hop = s.i_hop
        assert hop is not None
        return Fwd(oif=hop[H_OIF], nh=hop[H_NH], session=s)

    def forward(self, pkt: Pkt, s: Session, outbound: bool) -> Verdict:
        """Translate ``pkt`` on ``s`` -- unless the ESP handler holds an IKE exchange for its turn."""
        if s.proto == PROTO_UDP and IKE_PORT in (s.in_port, s.rem_port) and self._observe_ike(pkt, s, outbound):
            return HELD
        return self.translate(pkt, s, outbound)

    def _observe_ike(self, pkt: Pkt, s: Session, outbound: bool) -> bool:
        esp = self.router.registry.by_name("esp")
        observe = getattr(esp, "observe_ike", None)
        if observe is None or pkt.ip.frag & 0x1FFF:
            return False
        payload = bytes(pkt.buf[pkt.ip.ihl + 8:])
        return bool(observe(s.nat_if, s.in_addr, s.rem_addr, payload, outbound, pkt.now, pkt))

    def on_remove(self, s: Session) -> None:
        return None
