"""The configuration model: immutable values produced by the parser.

Invariants:
  * Every class here is a frozen, slotted dataclass; a ``Config`` never changes
    after parsing.  ``render.render(config)`` gives canonical SEIL text that
    parses back to an equal ``Config`` (round-trip).
  * Addresses are ``ipaddress`` objects; address ranges are ``AddrRange``
    (inclusive first/last as ints, SEIL writes them ``a.b.c.d-e.f.g.h``).
  * Defaults follow SEIL except where passnat deliberately differs
    (documented in docs/config.md): fragment requeueing is on, ESP
    passthrough is in ``spi`` mode.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from enum import Enum
from typing import Literal

IPv4Address = ipaddress.IPv4Address
IPv4Network = ipaddress.IPv4Network
IPv4Interface = ipaddress.IPv4Interface

#: SEIL applies a NAT rule to lan1 when the rule names no interface.
DEFAULT_NAT_INTERFACE = "lan1"


@dataclass(frozen=True, slots=True)
class AddrRange:
    """An inclusive IPv4 address range (a single address when first == last)."""

    first: int
    last: int

    def __post_init__(self) -> None:
        if not 0 <= self.first <= self.last <= 0xFFFFFFFF:
            raise ValueError("bad address range")

    def __contains__(self, addr: int) -> bool:
        return self.first <= addr <= self.last

    @property
    def size(self) -> int:
        return self.last - self.first + 1

    @classmethod
    def single(cls, addr: IPv4Address | str) -> AddrRange:
        a = int(IPv4Address(addr))
        return cls(a, a)

    def __str__(self) -> str:
        if self.first == self.last:
            return str(IPv4Address(self.first))
        return f"{IPv4Address(self.first)}-{IPv4Address(self.last)}"


@dataclass(frozen=True, slots=True)
class PortRange:
    """An inclusive port range; SEIL writes ``80`` or ``80-80``."""

    first: int
    last: int

    def __post_init__(self) -> None:
        if not 0 <= self.first <= self.last <= 0xFFFF:
            raise ValueError("bad port range")

    def __contains__(self, port: int) -> bool:
        return self.first <= port <= self.last

    @property
    def size(self) -> int:
        return self.last - self.first + 1

    def __str__(self) -> str:
        if self.first == self.last:
            return str(self.first)
        return f"{self.first}-{self.last}"


# ---------------------------------------------------------------- interfaces


class TcpMssMode(Enum):
    OFF = "off"
    AUTO = "auto"
    FIXED = "fixed"


@dataclass(frozen=True, slots=True)
class TcpMss:
    """``interface <if> tcp-mss {<n>|auto|off}``; auto = MTU - 56 (SEIL)."""

    mode: TcpMssMode = TcpMssMode.OFF
    value: int = 0  # only for FIXED


@dataclass(frozen=True, slots=True)
class InterfaceConfig:
    """``interface <if> add <addr/len>``, ``mtu``, ``tcp-mss``, ``description``."""

    name: str
    addresses: tuple[IPv4Interface, ...] = ()
    mtu: int | None = None  # None: 1500
    tcp_mss: TcpMss = TcpMss()
    description: str | None = None

    @property
    def effective_mtu(self) -> int:
        return self.mtu if self.mtu is not None else 1500

    @property
    def effective_mss(self) -> int | None:
        """The MSS to clamp to, or None when clamping is off."""
        if self.tcp_mss.mode is TcpMssMode.AUTO:
            return self.effective_mtu - 56
        if self.tcp_mss.mode is TcpMssMode.FIXED:
            return self.tcp_mss.value
        return None


@dataclass(frozen=True, slots=True)
class Route:
    """``route add {<net>|default} {<gw>|<interface>|discard} [distance <n>]``."""

    destination: IPv4Network
    gateway: IPv4Address | None = None
    interface: str | None = None
    discard: bool = False
    distance: int = 1


# ----------------------------------------------------------------------- NAT


@dataclass(frozen=True, slots=True)
class NaptPrivate:
    """``nat napt add private <range> [interface <if>]``."""

    addresses: AddrRange
    interface: str = DEFAULT_NAT_INTERFACE


@dataclass(frozen=True, slots=True)
class NaptGlobal:
    """``nat napt add global <addr> [interface <if>]`` (default: the interface address)."""

    address: IPv4Address
    interface: str = DEFAULT_NAT_INTERFACE


class SnaptKind(Enum):
    PORTS = "ports"  # protocol tcp|udp|tcpudp listen <p> forward <ip> <p>
    PROTOCOL = "protocol"  # protocol <n> forward <ip>
    DEFAULT = "default"  # default <ip>


#: protocol field of a PORTS rule: 6, 17, or this marker for both.
TCPUDP = "tcpudp"


@dataclass(frozen=True, slots=True)
class SnaptRule:
    """``nat snapt add ...`` (static NAPT / port forwarding), in configured order."""

    kind: SnaptKind
    forward: IPv4Address
    protocol: int | str | None = None  # int proto number, or TCPUDP; None for DEFAULT
    listen: PortRange | None = None
    forward_ports: PortRange | None = None
    interface: str = DEFAULT_NAT_INTERFACE
    enabled: bool = True
    #: the spelling used in the config for a named protocol (e.g. "esp"), for rendering
    protocol_name: str | None = None

    def protocols(self) -> tuple[int, ...]:
        if self.protocol == TCPUDP:
            return (6, 17)
        if isinstance(self.protocol, int):
            return (self.protocol,)
        return (6, 17)  # DEFAULT forwards every TCP and UDP port


@dataclass(frozen=True, slots=True)
class StaticNat:
    """``nat static add <private> <global> [interface <if>]`` (SEIL "SNAT")."""

    private: IPv4Address
    global_: IPv4Address
    interface: str = DEFAULT_NAT_INTERFACE


@dataclass(frozen=True, slots=True)
class DynamicNat:
    """``nat dynamic add {private|global} <range> [interface <if>]`` (SEIL "DNAT")."""

    side: Literal["private", "global"]
    addresses: AddrRange
    interface: str = DEFAULT_NAT_INTERFACE


class EspMode(Enum):
    SPI = "spi"  # passnat default: several inside hosts per server (B1)
    FIRST_COME = "first-come"  # SEIL: the first inside host gets every inbound ESP


class ReflectMode(Enum):
    """``nat option reflect``: where hairpinning (``nat reflect``) applies."""

    ALL = "all"  # passnat default: every interface that is not a NAT interface (RFC 4787 REQ-9)
    LISTED = "listed"  # SEIL: only the interfaces named by ``nat reflect add interface``


class PortAssignment(Enum):
    AUTO = "auto"  # keep the source port when free, else a nearby one (SEIL default)
    RANDOM = "random"


@dataclass(frozen=True, slots=True)
class NatTimeouts:
    """``nat timeout <s>`` and ``nat timeout protocol <class> <s>`` (None: use ``default``)."""

    default: int = 900
    tcp_synonly: int | None = None
    tcp_established: int | None = None
    udp: int | None = None
    #: [passnat] UDP until its first reply (None: 30 s, or the ``udp`` timer when that is set; router.py)
    udp_unreplied: int | None = None
    icmp: int | None = None
    esp: int | None = None
    gre: int | None = None
    dynamic: int | None = None

    def get(self, klass: str) -> int:
        value = getattr(self, klass.replace("-", "_"))
        return self.default if value is None else int(value)


#: Global session maximum when ``nat session maximum`` is not set (SEIL x86/BPV4).
DEFAULT_SESSION_MAXIMUM = 65536


@dataclass(frozen=True, slots=True)
class NatSessionLimits:
    """``nat session restricted-per-ip|restricted-per-private-ip <n>`` and ``maximum``.

    ``restricted_per_private_ip`` None (``system-default``) is passnat's default share:
    a quarter of ``maximum`` (``private_ip_limit``); SEIL's default is no limit."""

    restricted_per_ip: int | None = None
    restricted_per_private_ip: int | None = None
    maximum: int = DEFAULT_SESSION_MAXIMUM

    @property
    def private_ip_limit(self) -> int:
        """Sessions one private address may hold: the configured value, else a quarter of the table."""
        if self.restricted_per_private_ip is not None:
            return self.restricted_per_private_ip
        return max(1, self.maximum // DEFAULT_PRIVATE_SHARE)


#: the default per-host share is 1/4 of the session table (``nat session restricted-per-private-ip``)
DEFAULT_PRIVATE_SHARE = 4


class InboundRouting(Enum):
    """``nat option inbound-routing``: what a NAT interface may send to inside addresses."""

    NAT_ONLY = "nat-only"  # only through NAT state, SNAPT, static/dynamic NAT or a filter pass rule
    PLAIN = "plain"  # plain routing (passnat before issue 13; SEIL without filters)


@dataclass(frozen=True, slots=True)
class NatConfig:
    napt_private: tuple[NaptPrivate, ...] = ()
    napt_global: tuple[NaptGlobal, ...] = ()
    snapt: tuple[SnaptRule, ...] = ()
    static: tuple[StaticNat, ...] = ()
    dynamic: tuple[DynamicNat, ...] = ()
    timeouts: NatTimeouts = NatTimeouts()
    session: NatSessionLimits = NatSessionLimits()
    port_assignment: PortAssignment = PortAssignment.AUTO
    esp_mode: EspMode = EspMode.SPI
    #: settling window for binding an unknown inbound SPI (``nat option esp-pairing-window``)
    esp_pairing_window: float = 1.0
    logging: bool = False
    #: ``nat reflect add interface <if>``: interfaces whose packets to a global address are reflected
    reflect: tuple[str, ...] = ()
    #: ``nat option reflect`` (passnat): every non-NAT interface (default) or only the listed ones
    reflect_mode: ReflectMode = ReflectMode.ALL
    inbound_routing: InboundRouting = InboundRouting.NAT_ONLY

    def nat_interfaces(self) -> frozenset[str]:
        names: set[str] = set()
        for group in (self.napt_private, self.napt_global, self.snapt, self.static, self.dynamic):
            names.update(r.interface for r in group)
        return frozenset(names)


# -------------------------------------------------------------------- filter


class FilterDirection(Enum):
    IN = "in"
    OUT = "out"
    INOUT = "in/out"


class FilterAction(Enum):
    PASS = "pass"
    BLOCK = "block"


@dataclass(frozen=True, slots=True)
class AddrMatch:
    """A filter ``src``/``dst``: a prefix or range, ``self``, an interface name, or any."""

    kind: Literal["any", "range", "self", "interface"]
    range: AddrRange | None = None
    interface: str | None = None
    text: str = "any"  # as written, for rendering (prefix form is kept)

    def __str__(self) -> str:
        return self.text


ANY_ADDR = AddrMatch("any")


@dataclass(frozen=True, slots=True)
class FilterRule:
    """``filter add <name> interface <if|any> direction ... action ... [...]``.

    ``protocol`` is None for any, an int, or one of "tcpudp", "tcp-established",
    "tcp-synonly" (SEIL's TCP variants); ``protocol_name`` keeps the spelling.
    """

    name: str
    interface: str  # "any" for every interface
    direction: FilterDirection
    action: FilterAction
    protocol: int | str | None = None
    protocol_name: str | None = None
    icmp_type: int | None = None
    src: AddrMatch = ANY_ADDR
    srcport: PortRange | None = None
    dst: AddrMatch = ANY_ADDR
    dstport: PortRange | None = None
    state: bool = False
    state_ttl: int | None = None
    logging: Literal["off", "on", "state-only"] = "off"
    label: str | None = None
    enabled: bool = True
    #: ``ipopts {none|any|<n>}``: match packets without IP options, with any, or
    #: with option number n; None (not given) matches regardless of options
    ipopts: Literal["none", "any"] | int | None = None


# ------------------------------------------------------------------- options


class RejectMode(Enum):
    """``option ip reject``: which sides get a TCP RST / ICMP unreachable for a closed service."""

    LAN = "lan"  # passnat default: packets from interfaces that are not NAT interfaces
    ALL = "all"  # also from NAT (WAN) interfaces
    OFF = "off"  # never: a silent drop everywhere


class UnicastRpf(Enum):
    """``option ip unicast-rpf``: the reverse-path check of packets' sources (RFC 3704)."""

    STRICT = "strict"  # the source must route back out of the interface it came in on (passnat default)
    LOOSE = "loose"  # the source must have a route (not a discard route), on any interface
    NONE = "none"  # no check (SEIL's default)


@dataclass(frozen=True, slots=True)
class IpOptions:
    """``option ip ...``.  passnat's requeueing default is on (RFC 4787 REQ-14), its
    unicast-rpf default strict (BCP 38)."""

    unicast_rpf: UnicastRpf = UnicastRpf.STRICT
    fragment_requeueing: bool = True
    fragment_requeueing_limit: int = 256
    fragment_requeueing_timeout: float = 5.0
    #: ``option ip reject`` (passnat): answer packets for a service the router does not offer
    reject: RejectMode = RejectMode.LAN


# ------------------------------------------------------------------ HA sync


#: TCP port of the session synchronisation between two passnat routers (``ha sync port``)
DEFAULT_HA_PORT = 7822


@dataclass(frozen=True, slots=True)
class HaSync:
    """``ha sync ...`` (passnat extension, docs/ha.md): session synchronisation with a standby.

    ``peer`` None: no synchronisation (a single router).  ``interface`` is a *Linux* interface
    name (a dedicated link passnat does not forward on); ``local`` the kernel address to listen
    and connect from; ``key`` the shared secret that authenticates every message (HMAC)."""

    peer: IPv4Address | None = None
    local: IPv4Address | None = None
    interface: str | None = None
    key: str | None = None
    port: int = DEFAULT_HA_PORT

    @property
    def enabled(self) -> bool:
        return self.peer is not None


# -------------------------------------------------------------------- config


@dataclass(frozen=True, slots=True)
class Config:
    hostname: str | None = None
    interfaces: tuple[InterfaceConfig, ...] = ()
    routes: tuple[Route, ...] = ()
    nat: NatConfig = NatConfig()
    filters: tuple[FilterRule, ...] = ()
    options: IpOptions = IpOptions()
    #: ``filter default {pass|block}`` (passnat extension): the action when no rule matches
    filter_default: FilterAction = FilterAction.PASS
    #: ``ha sync ...`` (passnat extension): session synchronisation with a standby router
    ha: HaSync = HaSync()
    #: warnings from parsing (skipped SEIL commands); not part of equality
    warnings: tuple[str, ...] = field(default=(), compare=False)

    def interface(self, name: str) -> InterfaceConfig | None:
        for itf in self.interfaces:
            if itf.name == name:
                return itf
        return None
