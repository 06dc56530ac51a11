"""What protocol handlers see and return, and the registry that picks them.

A handler is a registered plug-in (libalias ``proto_handler``): it declares the
IP protocols it serves, a named priority and a cheap ``matches()``
fingerprint.  For each slow-path packet the router asks the handlers of the
packet's protocol, highest priority first, and the first whose ``matches()``
is true handles it.  Handlers create sessions only through the session table
and return plain values:

  * ``Fwd``: forward the (already rewritten) packet; for inbound packets it
    names the egress interface and next hop; ``extra`` carries packets to send
    after it (held packets released by this one).
  * a ``Drop`` member: drop and count.
  * ``HELD``: the handler keeps the packet and will release it later (as
    ``extra`` of another verdict or from its ``on_timer``).
  * ``None``: not mine / no session; the router goes on (static NAT, SNAPT,
    local delivery, unsolicited drop).
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import IntEnum
from typing import TYPE_CHECKING, Protocol

from passnat.nat.drops import Drop
from passnat.packet.ipv4 import IPv4

if TYPE_CHECKING:
    from passnat.nat.actions import Output
    from passnat.nat.router import Router
    from passnat.nat.session import Session
    from passnat.nat.static import SnaptTarget


class Priority(IntEnum):
    """Named handler priorities: lower runs first."""

    ALG = 10  # application-layer gateways (PPTP control on TCP 1723)
    TUNNEL = 20  # PPTP enhanced GRE by Call ID
    PROTOCOL = 50  # ordinary per-protocol NAPT (TCP/UDP, ICMP, ESP)
    FALLBACK = 90  # address-only (remote, protocol) sessions for everything else


class Pkt:
    """A packet on the slow path: the mutable buffer plus parsed fields.

    A plain slotted class (one is made per slow-path packet; a dataclass with a
    default factory costs noticeably more).
    """

    __slots__ = ("buf", "ip", "iface", "now", "orig", "sport", "dport", "flags", "icmp_type", "created",
                 "hairpin")

    def __init__(self, buf: bytearray, ip: IPv4, iface: str, now: float, orig: bytes):
        self.buf = buf
        self.ip = ip
        self.iface = iface  # ingress interface
        self.now = now
        self.orig = orig  # the packet as received (quoted in ICMP errors)
        self.sport = 0  # TCP/UDP ports, ICMP id (query) or 0
        self.dport = 0
        self.flags = 0  # TCP flags
        self.icmp_type = -1
        self.created: list[Session] = []  # sessions made for this packet (rolled back on a drop)
        #: a reflected (hairpinned) packet in its inbound step: (the interface it really arrived
        #: on, the session its outbound step used); handlers never hand it back to that session
        self.hairpin: tuple[str, Session | None] | None = None

    @property
    def l4(self) -> int:
        return self.ip.ihl

    @property
    def ingress(self) -> str:
        """The interface the packet arrived on (``iface`` is the NAT interface while reflected)."""
        hp = self.hairpin
        return self.iface if hp is None else hp[0]

    def is_hairpin_source(self, s: Session) -> bool:
        """True when ``s`` is the session that translated this reflected packet on its way out."""
        hp = self.hairpin
        return hp is not None and hp[1] is s

    @property
    def proto(self) -> int:
        return self.ip.proto

    @property
    def src(self) -> int:
        return self.ip.src

    @property
    def dst(self) -> int:
        return self.ip.dst

    def set_src(self, addr: int) -> None:
        self.ip.src = addr

    def set_dst(self, addr: int) -> None:
        self.ip.dst = addr


@dataclass(slots=True)
class Fwd:
    oif: str | None = None  # egress for inbound translation (None: route as usual)
    nh: str | None = None
    session: Session | None = None
    extra: list[Output] = field(default_factory=list)  # sent after this packet


class Held:
    """The handler kept the packet to send later (ESP pairing): no output, no drop."""

    __slots__ = ()


HELD = Held()

Verdict = Fwd | Drop | Held | None


class Handler(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def protocols(self) -> tuple[int, ...]: ...

    @property
    def priority(self) -> Priority: ...

    def bind(self, router: Router) -> None: ...

    def matches(self, pkt: Pkt, outbound: bool) -> bool: ...

    def outbound(self, pkt: Pkt, nat_if: str, nh: str, create: bool) -> Verdict:
        """A packet leaving through ``nat_if``; ``create`` False: only existing sessions."""

    def inbound(self, pkt: Pkt) -> Verdict:
        """A packet that arrived on a NAT interface: existing sessions only."""

    def snapt_inbound(self, pkt: Pkt, target: SnaptTarget) -> Verdict:
        """A packet a SNAPT rule forwards to ``target``: make its session."""

    def on_remove(self, session: Session) -> None: ...


class Registry:
    """Handlers by protocol; ``None`` key = every protocol without its own list."""

    def __init__(self) -> None:
        self._by_proto: dict[int | None, list[Handler]] = {}
        self._by_name: dict[str, Handler] = {}

    def register(self, handler: Handler) -> None:
        if handler.name in self._by_name:
            raise ValueError(f"handler {handler.name!r} registered twice")
        self._by_name[handler.name] = handler
        for proto in handler.protocols or (None,):
            lst = self._by_proto.setdefault(proto, [])
            if any(h.priority == handler.priority for h in lst):
                raise ValueError(f"two handlers for protocol {proto} at priority {handler.priority.name}")
            lst.append(handler)
            lst.sort(key=lambda h: h.priority)

    def for_proto(self, proto: int) -> list[Handler]:
        lst = self._by_proto.get(proto)
        if lst is None:
            return self._by_proto.get(None, [])
        return lst

    def pick(self, pkt: Pkt, outbound: bool) -> Handler | None:
        for h in self.for_proto(pkt.proto):
            if h.matches(pkt, outbound):
                return h
        fallback = self._by_proto.get(None, [])
        for h in fallback:
            if h.matches(pkt, outbound):
                return h
        return None

    def by_name(self, name: str) -> Handler | None:
        return self._by_name.get(name)

    def __iter__(self) -> Iterator[Handler]:
        return iter(self._by_name.values())
