"""Render a ``Config`` as canonical SEIL text (passnat's ``show config``).

Order follows a real SEIL ``show config`` (IIJ's factory default): hostname,
interfaces, routes, filters, nat, options; within each part, the configured
order.  Lines use SEIL's canonical keyword order, e.g.
``nat snapt add protocol tcp listen 80-80 forward 192.168.0.1 81-81 enable interface lan1``.

Invariant (tested): ``parse(render(c)) == c`` for every ``c`` the parser
produces.  Defaults are omitted except where SEIL prints them anyway
(``nat timeout``, ``nat logging``, a filter's ``protocol``, ``state``,
``logging`` and ``enable``), and ``option ip fragment-requeueing`` and
``option ip unicast-rpf``, which are always printed because passnat's
defaults differ from SEIL's.
passnat-only lines appear only when they differ from the default, so the
text of a SEIL-compatible configuration stays SEIL-compatible.
"""
from __future__ import annotations

from collections.abc import Iterator

from passnat.config.model import (
    DEFAULT_HA_PORT,
    DEFAULT_SESSION_MAXIMUM,
    Config,
    EspMode,
    FilterAction,
    FilterRule,
    HaSync,
    InterfaceConfig,
    IpOptions,
    NatConfig,
    NatTimeouts,
    PortAssignment,
    PortRange,
    ReflectMode,
    RejectMode,
    Route,
    SnaptKind,
    SnaptRule,
    TcpMssMode,
)

_DEFAULT_OPTIONS = IpOptions()
_DEFAULT_NAT = NatConfig()


def render(config: Config, *, secrets: bool = True) -> str:
    """The canonical text; ``secrets`` False prints ``ha sync key`` as ``\"(hidden)\"``."""
    lines = [
        *_hostname(config.hostname),
        *(line for itf in config.interfaces for line in _interface(itf)),
        *(_route(route) for route in config.routes),
        *(_filter(rule) for rule in config.filters),
        *_filter_default(config.filter_default),
        *_nat(config.nat),
        *_options(config.options),
        *_ha(config.ha, secrets),
    ]
    return "".join(line + "\n" for line in lines)


def quote(text: str) -> str:
    """A double-quoted SEIL string (the lexer's escapes: ``\\"`` and ``\\\\``)."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _hostname(hostname: str | None) -> Iterator[str]:
    if hostname is not None:
        yield f"hostname {quote(hostname)}"


def _interface(itf: InterfaceConfig) -> Iterator[str]:
    prefix = f"interface {itf.name}"
    for address in itf.addresses:
        yield f"{prefix} add {address}"
    if itf.mtu is not None:
        yield f"{prefix} mtu {itf.mtu}"
    if itf.tcp_mss.mode is TcpMssMode.FIXED:
        yield f"{prefix} tcp-mss {itf.tcp_mss.value}"
    elif itf.tcp_mss.mode is TcpMssMode.AUTO:
        yield f"{prefix} tcp-mss auto"
    if itf.description is not None:
        yield f"{prefix} description {quote(itf.description)}"


def _route(route: Route) -> str:
    destination = "default" if route.destination.prefixlen == 0 else str(route.destination)
    via = "discard" if route.discard else str(route.gateway if route.gateway is not None else route.interface)
    distance = f" distance {route.distance}" if route.distance != 1 else ""
    return f"route add {destination} {via}{distance}"


# -------------------------------------------------------------------- filter


def _filter(rule: FilterRule) -> str:
    words = [f"filter add {rule.name} interface {rule.interface}",
             f"direction {rule.direction.value} action {rule.action.value}",
             f"protocol {_filter_protocol(rule)}"]
    if rule.icmp_type is not None:
        words.append(f"icmp-type {rule.icmp_type}")
    if rule.src.kind != "any":
        words.append(f"src {rule.src}")
    if rule.srcport is not None:
        words.append(f"srcport {rule.srcport}")
    if rule.dst.kind != "any":
        words.append(f"dst {rule.dst}")
    if rule.dstport is not None:
        words.append(f"dstport {rule.dstport}")
    if rule.ipopts is not None:
        words.append(f"ipopts {rule.ipopts}")
    words.append("state enable" if rule.state else "state disable")
    if rule.state_ttl is not None:
        words.append(f"state-ttl {rule.state_ttl}")
    words.append(f"logging {rule.logging}")
    if rule.label is not None:
        words.append(f"label {quote(rule.label)}")
    words.append("enable" if rule.enabled else "disable")
    return " ".join(words)


def _filter_protocol(rule: FilterRule) -> str:
    if rule.protocol_name is not None:
        return rule.protocol_name
    return "any" if rule.protocol is None else str(rule.protocol)


def _filter_default(action: FilterAction) -> Iterator[str]:
    if action is not FilterAction.PASS:
        yield f"filter default {action.value}"


# ----------------------------------------------------------------------- NAT


def _nat(nat: NatConfig) -> Iterator[str]:
    yield from _timeouts(nat.timeouts)
    yield f"nat logging {'on' if nat.logging else 'off'}"
    for rule in nat.napt_global:
        yield f"nat napt add global {rule.address} interface {rule.interface}"
    for private in nat.napt_private:
        yield f"nat napt add private {private.addresses} interface {private.interface}"
    for snapt in nat.snapt:
        yield _snapt(snapt)
    for static in nat.static:
        yield f"nat static add {static.private} {static.global_} interface {static.interface}"
    for dynamic in nat.dynamic:
        yield f"nat dynamic add {dynamic.side} {dynamic.addresses} interface {dynamic.interface}"
    for interface in nat.reflect:
        yield f"nat reflect add interface {interface}"
    yield from _session(nat)
    yield from _nat_options(nat)


def _timeouts(timeouts: NatTimeouts) -> Iterator[str]:
    yield f"nat timeout {timeouts.default}"
    for klass in ("tcp-synonly", "tcp-established", "udp", "udp-unreplied", "icmp", "esp", "gre"):
        seconds = getattr(timeouts, klass.replace("-", "_"))
        if seconds is not None:
            yield f"nat timeout protocol {klass} {seconds}"
    if timeouts.dynamic is not None:
        yield f"nat timeout dynamic {timeouts.dynamic}"


def _span(ports: PortRange | None) -> str:
    """snapt ports as SEIL prints them: always ``first-last``."""
    assert ports is not None
    return f"{ports.first}-{ports.last}"


def _snapt(rule: SnaptRule) -> str:
    state = "enable" if rule.enabled else "disable"
    if rule.kind is SnaptKind.DEFAULT:
        disabled = "" if rule.enabled else " disable"
        return f"nat snapt add default {rule.forward}{disabled} interface {rule.interface}"
    if rule.kind is SnaptKind.PORTS:
        return (f"nat snapt add protocol {rule.protocol_name} listen {_span(rule.listen)} "
                f"forward {rule.forward} {_span(rule.forward_ports)} {state} interface {rule.interface}")
    protocol = rule.protocol_name if rule.protocol_name is not None else rule.protocol
    return f"nat snapt add protocol {protocol} forward {rule.forward} {state} interface {rule.interface}"


def _session(nat: NatConfig) -> Iterator[str]:
    session = nat.session
    if session.restricted_per_ip is not None:
        yield f"nat session restricted-per-ip {session.restricted_per_ip}"
    if session.restricted_per_private_ip is not None:
        yield f"nat session restricted-per-private-ip {session.restricted_per_private_ip}"
    if session.maximum != DEFAULT_SESSION_MAXIMUM:
        yield f"nat session maximum {session.maximum}"


def _nat_options(nat: NatConfig) -> Iterator[str]:
    if nat.port_assignment is not PortAssignment.AUTO:
        yield f"nat option port-assignment {nat.port_assignment.value}"
    if nat.esp_mode is not EspMode.SPI:
        yield f"nat option esp-passthrough {nat.esp_mode.value}"
    if nat.esp_pairing_window != _DEFAULT_NAT.esp_pairing_window:
        yield f"nat option esp-pairing-window {round(nat.esp_pairing_window * 1000)}"
    if nat.reflect_mode is not ReflectMode.ALL:
        yield f"nat option reflect {nat.reflect_mode.value}"
    if nat.inbound_routing is not _DEFAULT_NAT.inbound_routing:
        yield f"nat option inbound-routing {nat.inbound_routing.value}"


# ------------------------------------------------------------------- options


def _ha(ha: HaSync, secrets: bool) -> Iterator[str]:
    if ha.peer is not None:
        yield f"ha sync peer {ha.peer}"
    if ha.local is not None:
        yield f"ha sync local {ha.local}"
    if ha.interface is not None:
        yield f"ha sync interface {ha.interface}"
    if ha.port != DEFAULT_HA_PORT:
        yield f"ha sync port {ha.port}"
    if ha.key is not None:
        yield f"ha sync key {quote(ha.key) if secrets else quote('(hidden)')}"


def _options(options: IpOptions) -> Iterator[str]:
    yield f"option ip fragment-requeueing {'on' if options.fragment_requeueing else 'off'}"
    if options.fragment_requeueing_limit != _DEFAULT_OPTIONS.fragment_requeueing_limit:
        yield f"option ip fragment-requeueing-limit {options.fragment_requeueing_limit}"
    if options.fragment_requeueing_timeout != _DEFAULT_OPTIONS.fragment_requeueing_timeout:
        yield f"option ip fragment-requeueing-timeout {round(options.fragment_requeueing_timeout)}"
    if options.reject is not RejectMode.LAN:
        yield f"option ip reject {options.reject.value}"
    yield f"option ip unicast-rpf {options.unicast_rpf.value}"  # always: passnat's default is not SEIL's
