"""``filter add`` (the IPv4 packet filter) and passnat's ``filter default``.

Keywords after ``filter add <name>`` may come in any order.  Rules are
evaluated first match wins, in the order ``Config.filters`` holds them;
``top``/``bottom``/``above``/``below`` place a rule when its line is read.

Policy routing (``action forward <gateway>``, ``direction redirect``) is a
SEIL feature passnat does not have: such lines are skipped with a warning.
``action forward discard`` is an error instead, because skipping a rule that
drops packets would let them through; so are interface wildcards
(``pppoe*``).  ``keepalive <IPv4address>`` is accepted and ignored with a
warning.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Literal, TypeVar, cast

from passnat.config.builder import ConfigBuilder, Position
from passnat.config.errors import Problem
from passnat.config.lexer import Token
from passnat.config.model import (
    ANY_ADDR,
    TCPUDP,
    AddrMatch,
    FilterAction,
    FilterDirection,
    FilterRule,
    PortRange,
)
from passnat.config.syntax import (
    Args,
    Command,
    Given,
    Param,
    convert,
    flag_param,
    optional_param,
    param,
    read_params,
    value_param,
)
from passnat.config.values import (
    ADDR_RANGE,
    FILTER_INTERFACE,
    FILTER_PROTOCOL,
    INTERFACE,
    IPV4,
    NETWORK,
    PORT_RANGE,
    STRING,
    ProtocolSpec,
    ValueType,
    choice,
    enum_choice,
    integer,
)

E = TypeVar("E", bound=Enum)

_NAME = re.compile(r"[A-Za-z0-9_]{1,16}")


def _filter_name(text: str) -> str:
    if not _NAME.fullmatch(text):
        raise ValueError("1-16 letters, digits or _")
    if text == "all":
        raise ValueError('"all" is reserved')
    return text


FILTER_NAME = ValueType("a filter name", _filter_name)


REDIRECT = "redirect"


def _direction(text: str) -> FilterDirection | str:
    """in, out, in/out, or SEIL's ``redirect`` (skipped by the handler)."""
    return text if text == REDIRECT else enum_choice(FilterDirection).convert(text)


DIRECTION = ValueType("one of: in, out, in/out, redirect", _direction)
ACTION = ValueType("one of: pass, block, forward", enum_choice(FilterAction).convert)


@dataclass(frozen=True, slots=True)
class Forward:
    """``action forward <target>`` (SEIL policy routing), which passnat does not implement."""

    target: Token


def _action(args: Args, keyword: Token) -> FilterAction | Forward:
    token = args.next(ACTION.expected)
    if token.text != "forward":
        return convert(token, ACTION)
    return Forward(args.next("a gateway address, an interface name or discard"))


def _addr_match(text: str) -> AddrMatch:
    """``src``/``dst``: any, self, an interface, an address, a range or a prefix."""
    if text in ("any", "self"):
        return ANY_ADDR if text == "any" else AddrMatch("self", text="self")
    if text[:1].isalpha() or text.endswith("*"):
        name = INTERFACE.convert(text)
        return AddrMatch("interface", interface=name, text=name)
    addresses = ADDR_RANGE.convert(text)
    canonical = str(NETWORK.convert(text)) if "/" in text else str(addresses)
    return AddrMatch("range", range=addresses, text=canonical)


def _ipopts(text: str) -> str | int:
    return text if text in ("none", "any") else integer(0, 255).convert(text)


def _optional_int(word: str, value_type: ValueType[int]) -> ValueType[int | None]:
    """``word`` (giving None) or ``value_type``."""

    def convert_(text: str) -> int | None:
        return None if text == word else value_type.convert(text)

    return ValueType(f"{word} or {value_type.expected}", convert_)


def _keepalive(text: str) -> object:
    return text if text == "none" else IPV4.convert(text)


def _state(text: str) -> bool:
    return choice("enable", "disable").convert(text) == "enable"


ADDRESS_MATCH = ValueType("an address, range, prefix, interface name, self or any", _addr_match)
_TTL = integer(1, 2**31 - 1, "seconds")


def _anchor(where: str) -> Param:
    return Param("position", lambda args, keyword: Position(where, args.take(FILTER_NAME)))


PARAMS: dict[str, Param] = {
    "interface": value_param("interface", FILTER_INTERFACE),
    "direction": value_param("direction", DIRECTION),
    "action": Param("action", _action),
    "protocol": value_param("protocol", FILTER_PROTOCOL),
    "icmp-type": value_param("icmp-type", _optional_int("any", integer(0, 255, "an ICMP type"))),
    "src": value_param("src", ADDRESS_MATCH),
    "srcport": value_param("srcport", PORT_RANGE),
    "dst": value_param("dst", ADDRESS_MATCH),
    "dstport": value_param("dstport", PORT_RANGE),
    "ipopts": value_param("ipopts", ValueType("none, any or an IP option number 0-255", _ipopts)),
    "state": value_param("state", ValueType("one of: enable, disable", _state)),
    "state-ttl": value_param("state-ttl", _optional_int("normal", _TTL)),
    "keepalive": value_param("keepalive", ValueType(f"{IPV4.expected} or none", _keepalive)),
    "logging": value_param("logging", choice("on", "off", "state-only")),
    "label": value_param("label", STRING),
    "top": flag_param("position", Position("top")),
    "bottom": flag_param("position", Position("bottom")),
    "above": _anchor("above"),
    "below": _anchor("below"),
    "enable": flag_param("enabled", True),
    "disable": flag_param("enabled", False),
}

Logging = Literal["off", "on", "state-only"]
IpOpts = Literal["none", "any"] | int

_REQUIRED = {
    "interface": "interface <interface|any>",
    "direction": "direction {in|out|in/out}",
    "action": "action {pass|block}",
}
_PORT_PROTOCOLS = (6, 17, TCPUDP, "tcp-established", "tcp-synonly")
_TCPUDP = ProtocolSpec(TCPUDP, TCPUDP)


def filter_add(b: ConfigBuilder, args: Args) -> None:
    """filter add <name> interface { <interface> | any } direction { in | out | in/out }
        action { pass | block }
        [protocol { any | icmp | igmp | tcp | tcp-established | tcp-synonly | tcpudp | udp | ah | esp | gre | <num> }]
        [icmp-type { any | <num> }]
        [src { <IPv4address>[/<prefixlen>] | <IPv4address_range> | <interface> | self | any }] [srcport <port_range>]
        [dst { <IPv4address>[/<prefixlen>] | <IPv4address_range> | <interface> | self | any }] [dstport <port_range>]
        [ipopts { none | any | <num> }] [state { disable | enable [state-ttl { normal | <ttl> }] }]
        [keepalive { <IPv4address> | none }] [logging { on | off | state-only }] [label <label>]
        [top | bottom | above <base_name> | below <base_name>] [enable | disable]

    srcport/dstport without protocol mean protocol tcpudp (as IIJ's converter reads it).
    """
    name_token = args.next(FILTER_NAME.expected)
    name = convert(name_token, FILTER_NAME)
    params = read_params(args, PARAMS)
    for slot, what in _REQUIRED.items():
        if slot not in params:
            raise Problem(args.line.end_column, f"missing {what}")
    rule = _rule(name, params)
    if _skipped(b, params):
        b.skip_filter(name)
        return
    position = params.get("position")
    b.add_filter(rule, cast(Position, position.value) if position else Position(), name_token.column,
                 position.column if position else 0)
    for slot in ("src", "dst"):
        if slot in params:
            b.note_host_bits(cast(Token, params[slot].argument))
    keepalive = params.get("keepalive")
    if keepalive is not None and keepalive.value != "none":
        b.ignore(keepalive.keyword.column, "filter keepalive")


def _skipped(b: ConfigBuilder, params: Mapping[str, Given[object]]) -> bool:
    """Skip policy-routing rules (``action forward``, ``direction redirect``) with a warning.

    ``action forward discard`` drops packets: skipping it would let them
    through, so it is an error instead.
    """
    action, direction = params["action"], params["direction"]
    if isinstance(action.value, Forward):
        if action.value.target.text == "discard":
            raise Problem(action.value.target.column, "action forward discard is not supported by passnat; "
                          "use action block")
        b.skip_line(action.column, "filter add ... action forward")
        return True
    if direction.value == REDIRECT:
        b.skip_line(direction.column, "filter add ... direction redirect")
        return True
    return False


def _rule(name: str, params: Mapping[str, Given[object]]) -> FilterRule:
    protocol = _checked_protocol(params)
    state = param(params, "state", bool, False)
    if "state-ttl" in params and not state:
        raise Problem(params["state-ttl"].keyword.column, "state-ttl needs state enable")
    return FilterRule(
        name=name,
        interface=param(params, "interface", str, "any"),
        direction=_either(params["direction"].value, FilterDirection.INOUT),
        action=_either(params["action"].value, FilterAction.PASS),
        protocol=protocol.value if protocol is not None else None,
        protocol_name=protocol.name if protocol is not None else None,
        icmp_type=optional_param(params, "icmp-type", int),
        src=param(params, "src", AddrMatch, ANY_ADDR),
        srcport=optional_param(params, "srcport", PortRange),
        dst=param(params, "dst", AddrMatch, ANY_ADDR),
        dstport=optional_param(params, "dstport", PortRange),
        state=state,
        state_ttl=optional_param(params, "state-ttl", int),
        logging=cast(Logging, param(params, "logging", str, "off")),
        label=optional_param(params, "label", str),
        enabled=param(params, "enabled", bool, True),
        ipopts=cast(IpOpts, params["ipopts"].value) if "ipopts" in params else None,
    )


def _either(value: object, fallback: E) -> E:
    """``value`` if it is a member of ``fallback``'s enum (not forward/redirect), else ``fallback``."""
    return value if isinstance(value, type(fallback)) else fallback


def _checked_protocol(params: Mapping[str, Given[object]]) -> ProtocolSpec | None:
    """The rule's protocol, defaulting to tcpudp when ports are given; check ports and icmp-type fit it."""
    given = params.get("protocol")
    protocol = cast("ProtocolSpec | None", given.value) if given else None
    for ports in ("srcport", "dstport"):
        if ports not in params:
            continue
        if given is None:
            protocol = _TCPUDP
        elif protocol is None or protocol.value not in _PORT_PROTOCOLS:
            raise Problem(params[ports].keyword.column,
                          f"{ports} needs protocol tcp, udp, tcpudp, tcp-established or tcp-synonly, "
                          f"not {_written(given)}")
    if "icmp-type" in params and (protocol is None or protocol.value != 1):
        raise Problem(params["icmp-type"].keyword.column, "icmp-type needs protocol icmp")
    return protocol


def _written(given: Given[object]) -> str:
    argument = cast(Token, given.argument)
    return f'"{argument.text}"'


def filter_default(b: ConfigBuilder, args: Args) -> None:
    """filter default { pass | block }   (passnat extension; default pass)

    The action for packets no rule matches.
    """
    b.filter_default = args.take(enum_choice(FilterAction))
    args.end()


COMMANDS = (
    Command("filter add", filter_add),
    Command("filter default", filter_default),
)
