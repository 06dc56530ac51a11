"""``route add``: static IPv4 routes.

``distance`` orders routes to the same destination.  ``metric`` only matters
to RIP in SEIL and route keepalive (reachability probing) is not
implemented: both are accepted with a warning.  ``route add ... dhcp`` and
the dynamic-routing commands are skipped.
"""
from __future__ import annotations

from collections.abc import Mapping
from ipaddress import IPv4Address, IPv4Network

from passnat.config.builder import ConfigBuilder
from passnat.config.model import Route
from passnat.config.syntax import (
    Args,
    Command,
    Given,
    Param,
    convert,
    param,
    read_params,
    skip,
    value_param,
)
from passnat.config.values import (
    HOST,
    INTERFACE,
    IPV4,
    NETWORK,
    ON_OFF,
    ValueType,
    integer,
    or_default,
)

DEFAULT_ROUTE = IPv4Network("0.0.0.0/0")


def _destination(text: str) -> IPv4Network:
    return DEFAULT_ROUTE if text == "default" else NETWORK.convert(text)


DESTINATION = ValueType(f"{NETWORK.expected} or default", _destination)

#: (gateway, interface, discard) of a ``Route``
Via = tuple[IPv4Address | None, str | None, bool]


def _via(text: str) -> Via:
    if text == "discard":
        return None, None, True
    if text[:1].isalpha():
        return None, INTERFACE.convert(text), False
    return HOST.convert(text), None, False


VIA = ValueType("a gateway address, an interface name or discard", _via)

_KEEPALIVE_COUNT = integer(1, 65535)


def _keepalive_src(text: str) -> IPv4Address | None:
    return None if text == "none" else IPV4.convert(text)


PARAMS: dict[str, Param] = {
    "distance": value_param("distance", or_default(integer(1, 255, "a distance"), 1)),
    "metric": value_param("metric", or_default(integer(1, 15, "a metric"), 1)),
    "keepalive": value_param("keepalive", ON_OFF),
    "target": value_param("target", IPV4),
    "send-interval": value_param("send-interval", _KEEPALIVE_COUNT),
    "timeout": value_param("timeout", _KEEPALIVE_COUNT),
    "down-count": value_param("down-count", _KEEPALIVE_COUNT),
    "up-count": value_param("up-count", _KEEPALIVE_COUNT),
    "src": value_param("src", ValueType(f"{IPV4.expected} or none", _keepalive_src)),
}
_KEEPALIVE_DETAILS = ("target", "send-interval", "timeout", "down-count", "up-count", "src")


def route_add(b: ConfigBuilder, args: Args) -> None:
    """route add { <IPv4address>[/<prefixlen>] | default }
        { <gateway_IPv4address> | <interface> | dhcp | discard }
        [distance { <distance> | system-default }] [metric { <metric> | system-default }]
        [keepalive { on | off } [target <IPv4address>] [send-interval <interval>]
            [timeout <timeout>] [down-count <count>] [up-count <count>] [src <IPv4address>]]
    """
    destination_token = args.next(DESTINATION.expected)
    destination = convert(destination_token, DESTINATION)
    via_token = args.next(VIA.expected)
    if via_token.text == "dhcp":
        b.skip_line(via_token.column, "route add ... dhcp")
        return
    gateway, interface, discard = convert(via_token, VIA)
    params = read_params(args, PARAMS)
    distance = param(params, "distance", int, 1)
    route = Route(destination, gateway=gateway, interface=interface, discard=discard, distance=distance)
    b.add_route(route, via_token.column)
    b.note_host_bits(destination_token)
    _warn_ignored(b, params)


def _warn_ignored(b: ConfigBuilder, params: Mapping[str, Given[object]]) -> None:
    metric = params.get("metric")
    if metric is not None and metric.value != 1:
        b.ignore(metric.keyword.column, "route metric (used by RIP only)")
    keepalive = params.get("keepalive")
    details = [params[k].keyword for k in _KEEPALIVE_DETAILS if k in params]
    if (keepalive is not None and keepalive.value) or details:
        column = keepalive.keyword.column if keepalive is not None else details[0].column
        b.ignore(column, "route keepalive")


COMMANDS = (
    Command("route add", route_add),
    skip("route dynamic"),
)
