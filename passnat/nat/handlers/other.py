"""Address-only NAPT for protocols without ports: SEIL's first-come sessions (R10, R15).

Outbound: a session per (inside host, remote address, protocol); the source
address becomes the global one.  Inbound: every packet from a remote address
of that protocol goes to the *first* inside host that still has a session
with that remote (SEIL's 先着一名問題); different remotes are independent
sessions.  A SNAPT ``protocol <n> forward <ip>`` rule makes such a session for
an inside server when no inside host talks to the remote.

``AddressOnlyHandler`` is the shared mechanism (also ESP's ``first-come``
mode); ``OtherHandler`` serves every protocol without a handler of its own,
AH included: AH cannot survive NAT (its ICV covers the addresses), so AH is
translated like SEIL does but counted under its own name and logged.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from passnat.nat.drops import Drop
from passnat.nat.handlers.base import Fwd, Pkt, Priority, Verdict
from passnat.nat.handlers.common import admit, make_session
from passnat.nat.icmp_errors import Quoted, rewrite_address
from passnat.nat.session import Session
from passnat.nat.static import SnaptTarget
from passnat.packet.ipv4 import PROTO_AH, PROTO_ESP, PROTO_GRE, ntoa

if TYPE_CHECKING:
    from passnat.nat.router import Router

GroupKey = tuple[int, str, int]  # (protocol, nat interface, remote address)


class AddressOnlyHandler:
    """Sessions keyed by (inside host, remote, protocol); inbound to the first owner."""

    name = "address-only"
    protocols: tuple[int, ...] = ()
    priority = Priority.FALLBACK

    def __init__(self) -> None:
        self.by_host: dict[tuple[int, str, int, int], Session] = {}
        self.by_remote: dict[GroupKey, list[Session]] = {}

    def bind(self, router: Router) -> None:
        self.router = router

    def matches(self, pkt: Pkt, outbound: bool) -> bool:
        return True

    def klass(self, proto: int) -> str:
        return {PROTO_ESP: "esp", PROTO_GRE: "gre"}.get(proto, "default")

    # ----------------------------------------------------------- sessions

    def session_of(self, proto: int, nat_if: str, host: int, remote: int) -> Session | None:
        return self.by_host.get((proto, nat_if, host, remote))

    def owner(self, proto: int, nat_if: str, remote: int) -> Session | None:
        lst = self.by_remote.get((proto, nat_if, remote))
        return lst[0] if lst else None

    def new_session(self, pkt: Pkt, *, kind: str, nat_if: str, host: int, remote: int) -> Session | Drop:
        reason = admit(self.router, pkt, host)
        if reason is not None:
            return reason
        out_addr = self.router.globals.get(nat_if)
        if out_addr is None:
            return Drop.NO_PORT
        proto = pkt.ip.proto
        s = make_session(self.router, pkt, kind=kind, nat_if=nat_if, in_addr=host, in_port=0,
                         out_addr=out_addr, out_port=0, rem_addr=remote, rem_port=0,
                         klass=self.klass(proto), handler=self.name)
        self.by_host[(proto, nat_if, host, remote)] = s
        lst = self.by_remote.setdefault((proto, nat_if, remote), [])
        lst.append(s)
        if len(lst) > 1:
            self.router.count(f"{self.name}_shared_remote")
            self.on_contention(pkt, lst)
        return s

    def on_contention(self, pkt: Pkt, sessions: list[Session]) -> None:
        """A second inside host talks this protocol to the same remote (first-come)."""
        first = sessions[0]
        self.router.log_event(f"contention-{pkt.ip.proto}-{first.rem_addr}", pkt.now,
                              f"{ntoa(pkt.ip.src)} sends protocol {pkt.ip.proto} to {ntoa(first.rem_addr)}, "
                              f"but {ntoa(first.in_addr)} came first: every inbound packet goes to it")

    def on_remove(self, s: Session) -> None:
        self.by_host.pop((s.proto, s.nat_if, s.in_addr, s.rem_addr), None)
        key = (s.proto, s.nat_if, s.rem_addr)
        lst = self.by_remote.get(key)
        if lst is not None:
            if s in lst:
                lst.remove(s)
            if not lst:
                del self.by_remote[key]

    def rebuild(self, s: Session) -> None:
        return None  # no fast-path flows: nothing derived to rebuild

    def restore(self, s: Session) -> bool:
        """Re-create a saved session; restored in id order, so first-come owners stay first."""
        if s.out_addr != self.router.globals.get(s.nat_if) or \
                self.router.table.admit(s.origin, s.in_addr) is not None:
            return False
        self.router.table.add(s)
        self.by_host[(s.proto, s.nat_if, s.in_addr, s.rem_addr)] = s
        self.by_remote.setdefault((s.proto, s.nat_if, s.rem_addr), []).append(s)
        return True

    # --------------------------------------------------------- translation

    def outbound(self, pkt: Pkt, nat_if: str, nh: str, create: bool) -> Verdict:
        s = self.outbound_session(pkt, nat_if, create)
        if s is None or isinstance(s, Drop):
            return s
        return self.send_out(pkt, s)

    def outbound_session(self, pkt: Pkt, nat_if: str, create: bool) -> Session | Drop | None:
        """The sending host's session with the destination (refreshed), made when ``create``."""
        ip = pkt.ip
        s = self.session_of(ip.proto, nat_if, ip.src, ip.dst)
        if s is None:
            if not create:
                return None
            made = self.new_session(pkt, kind="napt", nat_if=nat_if, host=ip.src, remote=ip.dst)
            if isinstance(made, Drop):
                return made
            s = made
        s.last = pkt.now
        return s

    def send_out(self, pkt: Pkt, s: Session) -> Fwd:
        rewrite_address(pkt, s.out_addr, outbound=True)
        self.counted(pkt)
        return Fwd(session=s)

    def inbound(self, pkt: Pkt) -> Verdict:
        ip = pkt.ip
        if ip.dst != self.router.globals.get(pkt.iface):
            return None
        if pkt.hairpin is not None:  # reflected: the first owner that is not the sender's own session
            lst = self.by_remote.get((ip.proto, pkt.iface, ip.src), ())
            s = next((x for x in lst if not pkt.is_hairpin_source(x)), None)
        else:
            s = self.owner(ip.proto, pkt.iface, ip.src)
        if s is None:
            return None
        return self.deliver(pkt, s)

    def deliver(self, pkt: Pkt, s: Session) -> Fwd:
        s.last = pkt.now
        rewrite_address(pkt, s.in_addr, outbound=False)
        self.counted(pkt)
        hop = self.router.hop(s.in_addr)
        return Fwd(oif=hop[0], nh=hop[1], session=s) if hop else Fwd(session=s)

    def snapt_inbound(self, pkt: Pkt, target: SnaptTarget) -> Verdict:
        made = self.new_session(pkt, kind="snapt", nat_if=pkt.iface, host=target.addr, remote=pkt.ip.src)
        if isinstance(made, Drop):
            return made
        return self.deliver(pkt, made)

    def counted(self, pkt: Pkt) -> None:
        return None

    def error_session(self, q: Quoted, outbound: bool) -> tuple[Session, int | None] | None:
        """The session of a packet quoted in an ICMP error.

        Inbound errors quote a packet we sent (global -> remote): it goes to
        the remote's owner.  Outbound errors (an inside host's) quote a packet
        we delivered (remote -> inside host).
        """
        if outbound:
            for s in self.by_host.values():
                if s.proto == q.proto and s.in_addr == q.dst and s.rem_addr == q.src:
                    return s, None
            return None
        nat_if = self.router.nat_globals.get(q.src)
        owner = self.owner(q.proto, nat_if, q.dst) if nat_if is not None else None
        return (owner, None) if owner is not None else None


class OtherHandler(AddressOnlyHandler):
    """Every IP protocol without its own handler (AH, GRE v0, IP-in-IP, SCTP, ...)."""

    name = "other"

    def counted(self, pkt: Pkt) -> None:
        if pkt.ip.proto == PROTO_AH:
            self.router.count("ah_translated")
            self.router.log_event("ah", pkt.now,
                                  f"AH packet {ntoa(pkt.ip.src)} -> {ntoa(pkt.ip.dst)} translated, but AH "
                                  "cannot survive NAT: its integrity check covers the IP addresses "
                                  "(use ESP, or NAT-T)")
