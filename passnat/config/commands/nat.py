"""``nat ...``: NAPT, port forwarding (SNAPT), static/dynamic NAT, timers, limits, options.

SEIL's names: SNAT = ``nat static`` (1:1), DNAT = ``nat dynamic`` (pooled
1:1), SNAPT = ``nat snapt`` (port forwarding).  A rule without
``interface`` applies to lan1, as on SEIL.

passnat extensions (documented in docs/config.md): protocol names in
``nat snapt add protocol``, ``nat timeout protocol esp|gre``, durations
(``1h30m``) for timeouts, ``nat session maximum``, ``nat option
esp-passthrough``, ``nat option esp-pairing-window`` and ``nat option
reflect``, a single forward port for a listen range, CIDR ranges.  ``nat
reflect add interface`` is SEIL's hairpinning; passnat reflects on every
inside interface unless ``nat option reflect listed``.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from ipaddress import IPv4Address
from typing import Any, Literal, cast

from passnat.config.builder import ConfigBuilder
from passnat.config.errors import Problem
from passnat.config.lexer import Token
from passnat.config.model import (
    DEFAULT_NAT_INTERFACE,
    DEFAULT_SESSION_MAXIMUM,
    TCPUDP,
    DynamicNat,
    EspMode,
    InboundRouting,
    NaptGlobal,
    NaptPrivate,
    PortAssignment,
    PortRange,
    ReflectMode,
    SnaptKind,
    SnaptRule,
    StaticNat,
)
from passnat.config.syntax import (
    Args,
    Command,
    Given,
    Param,
    convert,
    flag_param,
    param,
    quote_token,
    read_params,
    skip,
    value_param,
)
from passnat.config.values import (
    ADDR_RANGE,
    HOST,
    INTERFACE,
    ON_OFF,
    SECONDS,
    SERVICE_PORT_RANGE,
    SNAPT_PROTOCOL,
    ProtocolSpec,
    choice,
    enum_choice,
    integer,
    or_default,
)

_INTERFACE_ONLY: dict[str, Param] = {"interface": value_param("interface", INTERFACE)}


def _rule_interface(args: Args) -> str:
    """Read ``[interface <if>]`` to the end of the line."""
    params = read_params(args, _INTERFACE_ONLY)
    return param(params, "interface", str, DEFAULT_NAT_INTERFACE)


# ---------------------------------------------------------------------- NAPT


def napt_private(b: ConfigBuilder, args: Args) -> None:
    """nat napt add private <IPaddress>[-<IPaddress>] [interface <interface>]

    Also ``a.b.c.d-N`` (last octet) and, as a passnat extension, ``a.b.c.d/len``.
    """
    token = args.next(ADDR_RANGE.expected)
    rule = NaptPrivate(convert(token, ADDR_RANGE), _rule_interface(args))
    b.add_napt_private(rule)
    b.note_host_bits(token)


def napt_global(b: ConfigBuilder, args: Args) -> None:
    """nat napt add global <IPv4address> [interface <interface>]"""
    token = args.next(HOST.expected)
    address = convert(token, HOST)
    b.add_napt_global(NaptGlobal(address, _rule_interface(args)), token.column)


# --------------------------------------------------------------------- SNAPT


def _forward(args: Args, keyword: Token) -> tuple[IPv4Address, PortRange | None]:
    """``forward <IPv4address> [<port>[-<port>]]``: a port range starts with a digit, keywords never do."""
    address = args.take(HOST)
    following = args.peek()
    ports = args.take(SERVICE_PORT_RANGE) if following is not None and following.text[:1].isdigit() else None
    return address, ports


SNAPT_PARAMS: dict[str, Param] = {
    "protocol": value_param("protocol", SNAPT_PROTOCOL),
    "listen": value_param("listen", SERVICE_PORT_RANGE),
    "forward": Param("forward", _forward),
    "default": value_param("default", HOST),
    "enable": flag_param("enabled", True),
    "disable": flag_param("enabled", False),
    "interface": value_param("interface", INTERFACE),
}

#: the keyword a port-forwarding rule is rendered with, by protocol value
_PORT_PROTOCOLS: dict[object, str] = {6: "tcp", 17: "udp", TCPUDP: TCPUDP}


def snapt_add(b: ConfigBuilder, args: Args) -> None:
    """nat snapt add protocol { tcp | udp | tcpudp } listen <listen_port> forward <IPv4address> <forward_port>
        [interface <interface>] [enable | disable]
    nat snapt add protocol <protocol> forward <IPv4address> [interface <interface>] [enable | disable]
    nat snapt add default <IPv4address> [interface <interface>] [enable | disable]

    Keywords may come in any order.  <protocol> is a number or (passnat) a
    name such as esp, gre, ah.  A listen range needs a forward range of the
    same size, or (passnat) a single forward port where that range starts.
    """
    params = read_params(args, SNAPT_PARAMS)
    interface = param(params, "interface", str, DEFAULT_NAT_INTERFACE)
    enabled = param(params, "enabled", bool, True)
    if "default" in params:
        _refuse(params, ("protocol", "listen", "forward"), "default")
        forward_to = param(params, "default", IPv4Address, IPv4Address(0))
        rule = SnaptRule(SnaptKind.DEFAULT, forward_to, interface=interface, enabled=enabled)
    else:
        rule = replace(_forward_rule(args, params), interface=interface, enabled=enabled)
    b.add_snapt(rule, params["default" if "default" in params else "protocol"].keyword.column)


def _forward_rule(args: Args, params: Mapping[str, Given[object]]) -> SnaptRule:
    protocol = _required(args, params, "protocol", "protocol <protocol> (or default <IPv4address>)")
    forward = _required(args, params, "forward", "forward <IPv4address>")
    spec = cast(ProtocolSpec, protocol.value)
    address, forward_ports = cast("tuple[IPv4Address, PortRange | None]", forward.value)
    listen = params.get("listen")
    name = _PORT_PROTOCOLS.get(spec.value)
    if name is None:
        if listen is not None or forward_ports is not None:
            raise Problem(protocol.column, f"expected one of: tcp, udp, tcpudp, "
                          f"got {quote_token(cast(Token, protocol.argument))} (listen/forward ports need one)")
        assert isinstance(spec.value, int)
        return SnaptRule(SnaptKind.PROTOCOL, address, protocol=spec.value, protocol_name=spec.name)
    if listen is None or forward_ports is None:
        raise Problem(protocol.column, f"protocol {name} needs listen <port> and forward <IPv4address> <port>")
    listen_ports = cast(PortRange, listen.value)
    ports = _match_ports(listen_ports, forward_ports, forward.column)
    return SnaptRule(SnaptKind.PORTS, address, protocol=spec.value, listen=listen_ports,
                     forward_ports=ports, protocol_name=name)


def _required(args: Args, params: Mapping[str, Given[object]], slot: str, what: str) -> Given[object]:
    if slot not in params:
        raise Problem(args.line.end_column, f"missing {what}")
    return params[slot]


def _refuse(params: Mapping[str, Given[object]], slots: tuple[str, ...], because: str) -> None:
    for slot in slots:
        if slot in params:
            keyword = params[slot].keyword
            raise Problem(keyword.column, f"{quote_token(keyword)} cannot be used with {because}")


def _match_ports(listen: PortRange, forward: PortRange, column: int) -> PortRange:
    """Forward ports for a listen range: same size, or a single port where the range starts."""
    if forward.size == listen.size:
        return forward
    if forward.size == 1 and forward.first + listen.size - 1 <= 65535:
        return PortRange(forward.first, forward.first + listen.size - 1)
    raise Problem(column, f"forward ports {forward} do not match listen ports {listen}: "
                  f"give {listen.size} ports or only the first one")


# ------------------------------------------------------ static / dynamic NAT


def static_add(b: ConfigBuilder, args: Args) -> None:
    """nat static add <private_IPaddress> <global_IPaddress> [interface <interface>]"""
    private = args.take(HOST)
    token = args.next(HOST.expected)
    global_ = convert(token, HOST)
    b.add_static(StaticNat(private, global_, _rule_interface(args)), token.column)


def _dynamic(b: ConfigBuilder, args: Args, side: Literal["private", "global"]) -> None:
    token = args.next(ADDR_RANGE.expected)
    b.add_dynamic(DynamicNat(side, convert(token, ADDR_RANGE), _rule_interface(args)))
    b.note_host_bits(token)


def dynamic_private(b: ConfigBuilder, args: Args) -> None:
    """nat dynamic add private <private_IPaddress>[-<IPaddress>] [interface <interface>]"""
    _dynamic(b, args, "private")


def dynamic_global(b: ConfigBuilder, args: Args) -> None:
    """nat dynamic add global <global_IPaddress>[-<IPaddress>] [interface <interface>]"""
    _dynamic(b, args, "global")


# ------------------------------------------------------------------ timeouts

TIMEOUT_CLASSES = ("tcp-synonly", "tcp-established", "udp", "udp-unreplied", "icmp", "esp", "gre")
OPTIONAL_SECONDS = or_default(SECONDS, None)


def timeout(b: ConfigBuilder, args: Args) -> None:
    """nat timeout <time>

    <time> is seconds, or (passnat) a duration such as 15m or 1h30m.
    """
    seconds = args.take(SECONDS)
    args.end()
    b.nat = replace(b.nat, timeouts=replace(b.nat.timeouts, default=seconds))


def timeout_protocol(b: ConfigBuilder, args: Args) -> None:
    """nat timeout protocol { tcp-synonly | tcp-established | udp | udp-unreplied | icmp | esp | gre } { <time> | system-default }

    udp-unreplied, esp and gre are passnat extensions.
    """
    klass = args.take(choice(*TIMEOUT_CLASSES))
    seconds = args.take(OPTIONAL_SECONDS)
    args.end()
    overrides: dict[str, Any] = {klass.replace("-", "_"): seconds}
    b.nat = replace(b.nat, timeouts=replace(b.nat.timeouts, **overrides))


def timeout_dynamic(b: ConfigBuilder, args: Args) -> None:
    """nat timeout dynamic { <time> | system-default }"""
    seconds = args.take(OPTIONAL_SECONDS)
    args.end()
    b.nat = replace(b.nat, timeouts=replace(b.nat.timeouts, dynamic=seconds))


# -------------------------------------------------------------------- limits

PER_IP_LIMIT = or_default(integer(1, 4096, "a session count"), None)
#: SEIL: 1-4096; passnat takes up to the largest table (a value >= ``maximum``: no limit), since its
#: default (system-default) is a quarter of the table, 16384 of the default 65536
PER_PRIVATE_IP_LIMIT = or_default(integer(1, 16777216, "a session count"), None)
SESSION_MAXIMUM = or_default(integer(1, 16777216, "a session count"), DEFAULT_SESSION_MAXIMUM)


def session_per_ip(b: ConfigBuilder, args: Args) -> None:
    """nat session restricted-per-ip { <max> | system-default }"""
    limit = args.take(PER_IP_LIMIT)
    args.end()
    b.nat = replace(b.nat, session=replace(b.nat.session, restricted_per_ip=limit))


def session_per_private_ip(b: ConfigBuilder, args: Args) -> None:
    """nat session restricted-per-private-ip { <max> | system-default }

    passnat's system-default is a quarter of ``nat session maximum`` (SEIL: no limit).
    """
    limit = args.take(PER_PRIVATE_IP_LIMIT)
    args.end()
    b.nat = replace(b.nat, session=replace(b.nat.session, restricted_per_private_ip=limit))


def session_maximum(b: ConfigBuilder, args: Args) -> None:
    """nat session maximum { <max> | system-default }   (passnat extension; default 65536)"""
    maximum = args.take(SESSION_MAXIMUM)
    args.end()
    b.nat = replace(b.nat, session=replace(b.nat.session, maximum=maximum))


# ------------------------------------------------------------------- options

PORT_ASSIGNMENT = or_default(enum_choice(PortAssignment), PortAssignment.AUTO)
ESP_MODE = or_default(enum_choice(EspMode), EspMode.SPI)
INBOUND_ROUTING = or_default(enum_choice(InboundRouting), InboundRouting.NAT_ONLY)
PAIRING_WINDOW = or_default(integer(100, 2000, "milliseconds"), 1000)


def option_port_assignment(b: ConfigBuilder, args: Args) -> None:
    """nat option port-assignment { random | auto | system-default }"""
    mode = args.take(PORT_ASSIGNMENT)
    args.end()
    b.nat = replace(b.nat, port_assignment=mode)


def option_esp_passthrough(b: ConfigBuilder, args: Args) -> None:
    """nat option esp-passthrough { spi | first-come | system-default }   (passnat extension; default spi)

    spi: inbound ESP goes to the inside host that owns the SPI, so several
    hosts can reach one server; first-come: SEIL's behaviour.
    """
    mode = args.take(ESP_MODE)
    args.end()
    b.nat = replace(b.nat, esp_mode=mode)


def option_esp_pairing_window(b: ConfigBuilder, args: Args) -> None:
    """nat option esp-pairing-window { <milliseconds> | system-default }   (passnat extension; 100-2000, default 1000)"""
    milliseconds = args.take(PAIRING_WINDOW)
    args.end()
    b.nat = replace(b.nat, esp_pairing_window=milliseconds / 1000)


# ------------------------------------------------------------------ reflect

REFLECT_MODE = or_default(enum_choice(ReflectMode), ReflectMode.ALL)


def reflect_add(b: ConfigBuilder, args: Args) -> None:
    """nat reflect add interface <interface>

    Hairpinning (RFC 4787 REQ-9, RFC 5382 REQ-8): packets arriving on
    <interface> for a global address (SNAPT, static or dynamic NAT, an inside
    host's NAPT mapping) are translated to the inside host, with the sender's
    own global mapping as their source.
    """
    params = read_params(args, _INTERFACE_ONLY)
    given = params.get("interface")
    if given is None:
        raise Problem(args.line.end_column, "missing interface <interface>")
    b.add_reflect(param(params, "interface", str, ""), given.column)


def option_reflect(b: ConfigBuilder, args: Args) -> None:
    """nat option reflect { all | listed | system-default }   (passnat extension; default all)

    all: every interface that is not a NAT interface reflects; listed: only the
    interfaces named by ``nat reflect add interface`` (SEIL's behaviour).
    """
    mode = args.take(REFLECT_MODE)
    args.end()
    b.nat = replace(b.nat, reflect_mode=mode)


def option_inbound_routing(b: ConfigBuilder, args: Args) -> None:
    """nat option inbound-routing { nat-only | plain | system-default }   (passnat extension; default nat-only)

    nat-only: a packet that arrives on a NAT interface reaches an inside
    interface only through a NAT session, SNAPT, static/dynamic NAT or a
    ``filter ... action pass`` rule; plain: it is routed like any packet.
    """
    mode = args.take(INBOUND_ROUTING)
    args.end()
    b.nat = replace(b.nat, inbound_routing=mode)


def logging(b: ConfigBuilder, args: Args) -> None:
    """nat logging { on | off }"""
    enabled = args.take(ON_OFF)
    args.end()
    b.nat = replace(b.nat, logging=enabled)


COMMANDS = (
    Command("nat napt add private", napt_private),
    Command("nat napt add global", napt_global),
    Command("nat snapt add", snapt_add),
    Command("nat static add", static_add),
    Command("nat dynamic add private", dynamic_private),
    Command("nat dynamic add global", dynamic_global),
    Command("nat timeout", timeout),
    Command("nat timeout protocol", timeout_protocol),
    Command("nat timeout dynamic", timeout_dynamic),
    Command("nat session restricted-per-ip", session_per_ip),
    Command("nat session restricted-per-private-ip", session_per_private_ip),
    Command("nat session maximum", session_maximum),
    Command("nat option port-assignment", option_port_assignment),
    Command("nat option esp-passthrough", option_esp_passthrough),
    Command("nat option esp-pairing-window", option_esp_pairing_window),
    Command("nat option reflect", option_reflect),
    Command("nat reflect add", reflect_add),
    Command("nat option inbound-routing", option_inbound_routing),
    Command("nat logging", logging),
    skip("nat bypass"),
    skip("nat proxy"),
    skip("nat upnp"),
    skip("nat6"),
)
