"""Value types of the SEIL configuration language: text in, model value out.

Each ``ValueType`` pairs a converter with the phrase that names what it
expects ("an IPv4 address"), so that every error reads
``expected <phrase>, got "<token>"``.  A converter raises ``ValueError``;
a non-empty message is appended as a hint.

Invariants:
  * Converters are pure and never accept a value the model would reject:
    whatever they return can be stored in a ``Config`` as is.
  * The canonical text of a value (what ``render`` prints) converts back to
    an equal value.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from typing import Generic, TypeVar

from passnat.config.model import TCPUDP, AddrRange, PortRange

T = TypeVar("T")
U = TypeVar("U")


@dataclass(frozen=True, slots=True)
class ValueType(Generic[T]):
    """A named converter: ``expected`` completes the sentence "expected ..."."""

    expected: str
    convert: Callable[[str], T]


# ------------------------------------------------------------------ numbers

_DECIMAL = re.compile(r"0|[1-9][0-9]{0,9}")


def _decimal(text: str) -> int:
    if not _DECIMAL.fullmatch(text):
        raise ValueError("")
    return int(text)


def integer(lo: int, hi: int, what: str = "a number") -> ValueType[int]:
    """A decimal integer in ``lo..hi`` (no sign, no leading zeros)."""

    def convert(text: str) -> int:
        value = _decimal(text)
        if not lo <= value <= hi:
            raise ValueError(f"out of range {lo}-{hi}")
        return value

    return ValueType(f"{what} {lo}-{hi}", convert)


_DURATION = re.compile(r"(?:([0-9]+)d)?(?:([0-9]+)h)?(?:([0-9]+)m)?(?:([0-9]+)s)?")
_UNIT_SECONDS = (86400, 3600, 60, 1)

#: The longest idle timer passnat accepts: one year.
MAX_TIMEOUT = 365 * 86400


def _seconds(text: str) -> int:
    if _DECIMAL.fullmatch(text):
        value = int(text)
    else:
        match = _DURATION.fullmatch(text)
        if match is None or not any(match.groups()):
            raise ValueError("")
        value = sum(int(g) * unit for g, unit in zip(match.groups(), _UNIT_SECONDS) if g)
    if not 1 <= value <= MAX_TIMEOUT:
        raise ValueError(f"out of range 1-{MAX_TIMEOUT} seconds")
    return value


#: ``900`` or ``1d2h3m4s`` (the duration form is a passnat extension for timeouts).
SECONDS = ValueType("seconds (e.g. 900 or 1h30m)", _seconds)


# ---------------------------------------------------------------- addresses

_DOTTED_QUAD = re.compile(r"[0-9]{1,3}(?:\.[0-9]{1,3}){3}")


def _ipv4(text: str) -> IPv4Address:
    if not _DOTTED_QUAD.fullmatch(text):
        raise ValueError("")
    for octet in text.split("."):
        if int(octet) > 255:
            raise ValueError(f"{octet} is more than 255")
        if len(octet) > 1 and octet.startswith("0"):
            raise ValueError(f"{octet} has a leading zero")
    return IPv4Address(text)


def _unicast(text: str) -> IPv4Address:
    addr = _ipv4(text)
    if addr.is_unspecified or addr.is_multicast or addr.is_loopback or addr == IPv4Address("255.255.255.255"):
        raise ValueError("not a unicast host address")
    return addr


IPV4 = ValueType("an IPv4 address", _ipv4)
HOST = ValueType("an IPv4 host address", _unicast)


def _split_prefix(text: str) -> tuple[str, int | None]:
    addr, slash, length = text.partition("/")
    if not slash:
        return addr, None
    if not re.fullmatch(r"[0-9]|[12][0-9]|3[0-2]", length):
        raise ValueError("prefix length must be 0-32")
    return addr, int(length)


def _network(text: str) -> IPv4Network:
    addr_text, length = _split_prefix(text)
    addr = _ipv4(addr_text)
    if length is None:
        return IPv4Network(addr)
    return IPv4Network(f"{addr}/{length}", strict=False)


def host_bits_note(text: str) -> str | None:
    """For a prefix with host bits set (``192.168.1.1/24``), say how it is read; else None.

    SEIL reads such a prefix as its network (192.168.1.0/24); so does passnat,
    with a warning because it is often a typo.
    """
    addr_text, slash, _ = text.partition("/")
    if not slash:
        return None
    network = _network(text)
    if network.network_address == IPv4Address(addr_text):
        return None
    return f"{text} has host bits set; read as {network}"


#: ``a.b.c.d/len`` (host bits are cleared) or ``a.b.c.d`` (= /32).
NETWORK = ValueType("an IPv4 network <address>/<prefixlen>", _network)


def _classful_length(addr: IPv4Address) -> int:
    first = int(addr) >> 24
    if first < 128:
        return 8
    if first < 192:
        return 16
    if first < 224:
        return 24
    raise ValueError("class D/E address has no default prefix length")


def _interface_address(text: str) -> IPv4Interface:
    addr_text, length = _split_prefix(text)
    addr = _unicast(addr_text)
    if length is None:
        length = _classful_length(addr)  # SEIL: classful when /len is omitted
    itf = IPv4Interface(f"{addr}/{length}")
    if length <= 30 and addr in (itf.network.network_address, itf.network.broadcast_address):
        raise ValueError(f"that is the network or broadcast address of {itf.network}")
    return itf


INTERFACE_ADDRESS = ValueType("an IPv4 address <address>[/<prefixlen>]", _interface_address)


def _addr_range(text: str) -> AddrRange:
    """``a``, ``a-b``, ``a-<last octet>`` or ``a/len`` as an inclusive range."""
    if "/" in text:
        net = _network(text)
        return AddrRange(int(net.network_address), int(net.broadcast_address))
    first_text, dash, last_text = text.partition("-")
    first = _ipv4(first_text)
    if not dash:
        return AddrRange.single(first)
    if re.fullmatch(r"[0-9]{1,3}", last_text):
        last_text = first_text.rsplit(".", 1)[0] + "." + last_text
    last = _ipv4(last_text)
    if last < first:
        raise ValueError("the range ends before it starts")
    return AddrRange(int(first), int(last))


ADDR_RANGE = ValueType("an IPv4 address or range (a.b.c.d, a.b.c.d-e.f.g.h, a.b.c.d-N or a.b.c.d/len)", _addr_range)


# -------------------------------------------------------------------- ports


def _port_range(lo: int) -> Callable[[str], PortRange]:
    def convert(text: str) -> PortRange:
        first_text, dash, last_text = text.partition("-")
        first = _decimal(first_text)
        last = _decimal(last_text) if dash else first
        if not lo <= first <= 65535 or not lo <= last <= 65535:
            raise ValueError(f"ports are {lo}-65535")
        if last < first:
            raise ValueError("the range ends before it starts")
        return PortRange(first, last)

    return convert


#: Filter ports: SEIL's factory config writes ``srcport 0-65535``.
PORT_RANGE = ValueType("a port or port range <port>[-<port>]", _port_range(0))
#: Port forwarding (``nat snapt``) ports: 1-65535.
SERVICE_PORT_RANGE = ValueType("a port or port range 1-65535", _port_range(1))


# --------------------------------------------------------------- interfaces

#: Interface families passnat runs on (SEIL legacy names).
INTERFACE_FAMILIES = ("lan", "vlan", "ppp", "pppoe", "ipsec", "tunnel")
#: Real SEIL interface families passnat does not have: their lines are skipped.
SKIPPED_INTERFACE_FAMILIES = ("l2tp", "pppac", "rac", "wwan")

_NUMBER_SUFFIX = r"(?:0|[1-9][0-9]{0,3})"
_INTERFACE = re.compile(f"(?:{'|'.join(INTERFACE_FAMILIES)}){_NUMBER_SUFFIX}")
_SKIPPED_INTERFACE = re.compile(f"(?:{'|'.join(SKIPPED_INTERFACE_FAMILIES)}){_NUMBER_SUFFIX}")


def _interface(text: str) -> str:
    if _INTERFACE.fullmatch(text):
        return text
    if text.endswith("*"):
        raise ValueError("interface wildcards are not supported by passnat")
    raise ValueError("")


def is_skipped_interface(text: str) -> bool:
    """True for a real SEIL interface of a family passnat does not have (l2tp0, ...)."""
    return _SKIPPED_INTERFACE.fullmatch(text) is not None


INTERFACE = ValueType("an interface name (lanN, vlanN, pppN, pppoeN, ipsecN or tunnelN)", _interface)


def _filter_interface(text: str) -> str:
    return text if text == "any" else _interface(text)


FILTER_INTERFACE = ValueType(f"any or {INTERFACE.expected}", _filter_interface)


# ------------------------------------------------------------ IP protocols

#: IP protocol names accepted wherever a protocol number is (RFC 5237 / IANA numbers).
IP_PROTOCOL_NAMES: dict[str, int] = {
    "icmp": 1,
    "igmp": 2,
    "ipip": 4,
    "tcp": 6,
    "udp": 17,
    "ipv6": 41,
    "rsvp": 46,
    "gre": 47,
    "esp": 50,
    "ah": 51,
    "ospf": 89,
    "pim": 103,
    "vrrp": 112,
    "l2tp": 115,
    "sctp": 132,
}

#: A protocol as the parser stores it: a number, or TCPUDP / a SEIL TCP variant.
Protocol = int | str


@dataclass(frozen=True, slots=True)
class ProtocolSpec:
    """A parsed protocol token: the value for the model and the name as written."""

    value: Protocol
    name: str | None  # None when written as a number


def _protocol(extra: tuple[str, ...]) -> Callable[[str], ProtocolSpec]:
    def convert(text: str) -> ProtocolSpec:
        if text in IP_PROTOCOL_NAMES:
            return ProtocolSpec(IP_PROTOCOL_NAMES[text], text)
        if text in extra:
            return ProtocolSpec(text, text)
        if _DECIMAL.fullmatch(text) and int(text) <= 255:
            return ProtocolSpec(int(text), None)
        raise ValueError("")

    return convert


#: ``nat snapt add protocol <number|name>`` (tcpudp only with listen/forward ports).
SNAPT_PROTOCOL = ValueType("a protocol number 0-255 or name (esp, gre, ah, ...)", _protocol((TCPUDP,)))
_filter_protocol = _protocol((TCPUDP, "tcp-established", "tcp-synonly"))


def _filter_protocol_or_any(text: str) -> ProtocolSpec | None:
    return None if text == "any" else _filter_protocol(text)


#: ``filter add ... protocol ...``: any, SEIL's names and TCP variants, IP protocol names, numbers.
FILTER_PROTOCOL = ValueType(
    "a protocol (any, icmp, igmp, tcp, tcp-established, tcp-synonly, tcpudp, udp, ah, esp, gre or 0-255)",
    _filter_protocol_or_any,
)


# ------------------------------------------------------------------- words


def choice(*words: str) -> ValueType[str]:
    """One keyword out of ``words``; the message lists them in this order."""

    def convert(text: str) -> str:
        if text not in words:
            raise ValueError("")
        return text

    return ValueType("one of: " + ", ".join(words), convert)


E = TypeVar("E", bound=Enum)


def enum_choice(enum: type[E]) -> ValueType[E]:
    """One of the values of ``enum``, listed in definition order."""
    words = choice(*(member.value for member in enum))
    return ValueType(words.expected, lambda text: enum(words.convert(text)))


def or_default(value_type: ValueType[T], default: U) -> ValueType[T | U]:
    """``value_type`` or the word ``system-default`` (which gives ``default``)."""

    def convert(text: str) -> T | U:
        return default if text == "system-default" else value_type.convert(text)

    return ValueType(f"{value_type.expected} or system-default", convert)


def _on_off(text: str) -> bool:
    if text not in ("on", "off"):
        raise ValueError("")
    return text == "on"


ON_OFF = ValueType("one of: on, off", _on_off)


def _string(text: str) -> str:
    return text


#: Any single token (quoted or bare); used for free text such as descriptions.
STRING = ValueType("a string", _string)
