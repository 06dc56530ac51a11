"""``interface <if> ...``: addresses, MTU, TCP-MSS clamping, description.

passnat runs on lanN, vlanN, pppN, pppoeN, ipsecN and tunnelN; lines for
the other SEIL families (l2tpN, pppacN, rac0, wwan0) and for interface
features passnat does not have (media, PPPoE binding, VLAN tags, IPv6, ...)
are skipped with a warning.
"""
from __future__ import annotations

from passnat.config.builder import ConfigBuilder
from passnat.config.lexer import Token
from passnat.config.model import TcpMss, TcpMssMode
from passnat.config.syntax import Args, Command, convert, skip
from passnat.config.values import (
    INTERFACE_ADDRESS,
    IPV4,
    STRING,
    ValueType,
    integer,
    or_default,
)

MTU = or_default(integer(68, 65535, "an MTU"), None)
_MSS_VALUE = integer(64, 65495, "an MSS")


def _tcp_mss(text: str) -> TcpMss:
    if text in ("auto", "off"):
        return TcpMss(TcpMssMode(text))
    return TcpMss(TcpMssMode.FIXED, _MSS_VALUE.convert(text))


TCP_MSS = ValueType(f"{_MSS_VALUE.expected}, auto or off", _tcp_mss)


def _address(b: ConfigBuilder, args: Args, *, replace_primary: bool) -> None:
    name = args.bound["if"].text
    token = args.next(INTERFACE_ADDRESS.expected)
    if ":" in token.text:
        b.skip_line(token.column, f"IPv6 address {token.text}")
        return
    address = convert(token, INTERFACE_ADDRESS)
    remote = _remote(args)
    args.end()
    b.add_address(name, address, token.column, replace_primary=replace_primary)
    if remote is not None:
        b.ignore(remote.column, "remote")


def _remote(args: Args) -> Token | None:
    """Read an optional ``remote <IPv4address>``; return its keyword token."""
    keyword = args.peek()
    if keyword is None or keyword.text != "remote":
        return None
    args.next("remote")
    args.take(IPV4)
    return keyword


def interface_add(b: ConfigBuilder, args: Args) -> None:
    """interface <if> add <IPv4address>[/<prefixlen>] [remote <IPv4address>]

    Repeatable; the first address is the primary.  Without /<prefixlen> the
    classful length applies (SEIL).  ``remote`` is accepted and ignored.
    """
    _address(b, args, replace_primary=False)


def interface_address(b: ConfigBuilder, args: Args) -> None:
    """interface <if> address <IPv4address>[/<prefixlen>] [remote <IPv4address>]

    Sets (replaces) the primary address.
    """
    _address(b, args, replace_primary=True)


def interface_mtu(b: ConfigBuilder, args: Args) -> None:
    """interface <if> mtu { <mtu> | system-default }"""
    mtu = args.take(MTU)
    args.end()
    b.interface(args.bound["if"].text).mtu = mtu


def interface_tcp_mss(b: ConfigBuilder, args: Args) -> None:
    """interface <if> tcp-mss { <size> | auto | off }"""
    mss = args.take(TCP_MSS)
    args.end()
    b.interface(args.bound["if"].text).tcp_mss = mss


def interface_description(b: ConfigBuilder, args: Args) -> None:
    """interface <if> description <description>"""
    description = args.take(STRING)
    args.end()
    b.interface(args.bound["if"].text).description = description


COMMANDS = (
    Command("interface <if> add", interface_add),
    Command("interface <if> address", interface_address),
    Command("interface <if> mtu", interface_mtu),
    Command("interface <if> tcp-mss", interface_tcp_mss),
    Command("interface <if> description", interface_description),
    skip("interface <if> add dhcp"),
    skip("interface <if> add dhcp6"),
    skip("interface <if> add router-advertisement"),
    skip("interface <if> add router-advertisements"),
    *(
        skip(f"interface <if> {word}")
        for word in (
            "bind-realm",
            "bind-tunnel-protocol",
            "floatlink",
            "ipcp-configuration",
            "l2tp",
            "max-session",
            "mdi",
            "media",
            "over",
            "ppp-configuration",
            "queue",
            "tag",
            "tcp-mss6",
            "tunnel",
            "tunnel-end-address",
            "tx-tos-set",
            "unnumbered",
            "user-max-session",
        )
    ),
    skip("interface <seil-if>"),
)
