"""What the parser builds: the model values for each command."""
from __future__ import annotations

from ipaddress import IPv4Address, IPv4Interface, IPv4Network

import pytest

from passnat.config.errors import ConfigError
from passnat.config.model import (
    ANY_ADDR,
    TCPUDP,
    AddrMatch,
    AddrRange,
    Config,
    DynamicNat,
    EspMode,
    FilterAction,
    FilterDirection,
    InterfaceConfig,
    NaptGlobal,
    NaptPrivate,
    PortAssignment,
    PortRange,
    ReflectMode,
    RejectMode,
    Route,
    SnaptKind,
    SnaptRule,
    StaticNat,
    TcpMss,
    TcpMssMode,
)
from passnat.config.parser import parse
from tests.config.helpers import parse_one

# ---------------------------------------------------------------- defaults


def test_empty_text_gives_the_default_config() -> None:
    config = parse("")
    assert config == Config()
    assert config.options.fragment_requeueing is True  # passnat default (SEIL: off)
    assert config.nat.esp_mode is EspMode.SPI
    assert config.filter_default is FilterAction.PASS


def test_warnings_are_not_part_of_equality() -> None:
    assert parse("ppp add x\n") == Config()


def test_hostname() -> None:
    assert parse_one('hostname ""').hostname == ""
    assert parse_one("hostname gw1").hostname == "gw1"


# -------------------------------------------------------------- interfaces


def test_interface_addresses_keep_order_and_address_replaces_the_primary() -> None:
    config = parse(
        "interface lan0 add 192.168.0.1/24\n"
        "interface lan0 add 192.168.1.1/24\n"
        "interface lan0 address 192.168.2.1/24\n"
        "interface lan1 address 10.0.0.1\n"
    )
    assert config.interfaces == (
        InterfaceConfig("lan0", (IPv4Interface("192.168.2.1/24"), IPv4Interface("192.168.1.1/24"))),
        InterfaceConfig("lan1", (IPv4Interface("10.0.0.1/8"),)),  # classful when /len is omitted
    )


def test_interface_settings() -> None:
    config = parse(
        "interface pppoe0 mtu 1454\n"
        "interface pppoe0 tcp-mss auto\n"
        'interface pppoe0 description "to ISP"\n'
        "interface lan0 tcp-mss 1300\n"
    )
    pppoe0 = config.interface("pppoe0")
    assert pppoe0 == InterfaceConfig("pppoe0", mtu=1454, tcp_mss=TcpMss(TcpMssMode.AUTO), description="to ISP")
    assert pppoe0.effective_mss == 1454 - 56
    assert config.interface("lan0") == InterfaceConfig("lan0", tcp_mss=TcpMss(TcpMssMode.FIXED, 1300))


def test_an_interface_left_at_defaults_is_not_in_the_config() -> None:
    assert parse("interface lan2 mtu 1400\ninterface lan2 mtu system-default\ninterface lan2 tcp-mss off\n") == Config()


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("interface lan0 add 192.168.0.0/24", "that is the network or broadcast address of 192.168.0.0/24"),
        ("interface lan0 add 127.0.0.1/8", "not a unicast host address"),
        ("interface lan0 add 224.0.0.1", "not a unicast host address"),
        ("interface lan0 add 192.168.0.1/33", "prefix length must be 0-32"),
    ],
)
def test_bad_interface_addresses(line: str, message: str) -> None:
    from tests.config.helpers import errors_of

    assert errors_of(line)[0].endswith(f"({message})")


def test_ipv6_interface_address_is_skipped() -> None:
    config = parse_one("interface lan0 add 2001:db8::1/64")
    assert config == Config()
    assert config.warnings == (
        "t.conf:1:20: warning: IPv6 address 2001:db8::1/64 is not supported by passnat; line skipped",
    )


def test_other_seil_interface_families_are_skipped() -> None:
    config = parse_one("interface l2tp0 add 10.0.0.1/30")
    assert config.warnings == ("t.conf:1:11: warning: interface l2tp0 is not supported by passnat; line skipped",)


# ------------------------------------------------------------------ routes


@pytest.mark.parametrize(
    ("line", "column", "prefix", "network"),
    [
        ("route add 10.0.0.1/8 192.168.0.1", 11, "10.0.0.1/8", "10.0.0.0/8"),
        ("nat napt add private 192.168.1.1/24", 22, "192.168.1.1/24", "192.168.1.0/24"),
        ("nat dynamic add private 192.168.1.1/24", 25, "192.168.1.1/24", "192.168.1.0/24"),
        ("filter add a interface lan0 direction in action pass src 192.168.1.1/24", 58, "192.168.1.1/24",
         "192.168.1.0/24"),
    ],
)
def test_a_prefix_with_host_bits_is_read_as_its_network_with_a_warning(
    line: str, column: int, prefix: str, network: str
) -> None:
    config = parse_one(line)
    assert config.warnings == (f"t.conf:1:{column}: warning: {prefix} has host bits set; read as {network}",)


def test_routes() -> None:
    config = parse(
        "route add default pppoe0\n"
        "route add 10.0.0.0/8 192.168.0.254 distance 20\n"
        "route add 10.9.9.9 discard\n"
    )
    assert config.routes == (
        Route(IPv4Network("0.0.0.0/0"), interface="pppoe0"),
        Route(IPv4Network("10.0.0.0/8"), gateway=IPv4Address("192.168.0.254"), distance=20),
        Route(IPv4Network("10.9.9.9/32"), discard=True),
    )


# --------------------------------------------------------------------- NAT


@pytest.mark.parametrize(
    ("spec", "first", "last"),
    [
        ("192.168.0.0-192.168.255.255", "192.168.0.0", "192.168.255.255"),
        ("192.168.0.10-20", "192.168.0.10", "192.168.0.20"),
        ("192.168.0.0/24", "192.168.0.0", "192.168.0.255"),
        ("192.168.0.7", "192.168.0.7", "192.168.0.7"),
    ],
)
def test_napt_private_address_forms(spec: str, first: str, last: str) -> None:
    config = parse_one(f"nat napt add private {spec}")
    expected = AddrRange(int(IPv4Address(first)), int(IPv4Address(last)))
    assert config.nat.napt_private == (NaptPrivate(expected, "lan1"),)  # lan1 when interface is omitted


def test_napt_global() -> None:
    config = parse_one("nat napt add global 198.51.100.1 interface pppoe0")
    assert config.nat.napt_global == (NaptGlobal(IPv4Address("198.51.100.1"), "pppoe0"),)


def test_snapt_port_forward_in_any_keyword_order() -> None:
    config = parse_one("nat snapt add interface pppoe0 forward 192.168.0.10 1723 disable listen 1723 protocol tcp")
    assert config.nat.snapt == (
        SnaptRule(
            SnaptKind.PORTS, IPv4Address("192.168.0.10"), protocol=6, listen=PortRange(1723, 1723),
            forward_ports=PortRange(1723, 1723), interface="pppoe0", enabled=False, protocol_name="tcp",
        ),
    )


def test_snapt_single_forward_port_starts_the_range() -> None:
    (rule,) = parse_one("nat snapt add protocol tcpudp listen 5000-5009 forward 192.168.0.10 6000").nat.snapt
    assert (rule.protocol, rule.listen, rule.forward_ports) == (TCPUDP, PortRange(5000, 5009), PortRange(6000, 6009))
    assert rule.protocols() == (6, 17)


@pytest.mark.parametrize(
    ("written", "number", "name"),
    [("50", 50, None), ("esp", 50, "esp"), ("gre", 47, "gre"), ("ah", 51, "ah"), ("ipv6", 41, "ipv6")],
)
def test_snapt_whole_protocol(written: str, number: int, name: str | None) -> None:
    (rule,) = parse_one(f"nat snapt add protocol {written} forward 192.168.0.10 interface pppoe0").nat.snapt
    assert rule == SnaptRule(SnaptKind.PROTOCOL, IPv4Address("192.168.0.10"), protocol=number,
                             interface="pppoe0", protocol_name=name)


def test_snapt_port_protocol_by_number_is_named() -> None:
    (rule,) = parse_one("nat snapt add protocol 17 listen 500 forward 192.168.0.10 500").nat.snapt
    assert (rule.kind, rule.protocol, rule.protocol_name) == (SnaptKind.PORTS, 17, "udp")


def test_snapt_default() -> None:
    (rule,) = parse_one("nat snapt add default 192.168.0.1 interface lan1").nat.snapt
    assert rule == SnaptRule(SnaptKind.DEFAULT, IPv4Address("192.168.0.1"), interface="lan1")


def test_static_and_dynamic_nat() -> None:
    config = parse(
        "nat static add 192.168.0.1 198.51.100.1 interface vlan0\n"
        "nat dynamic add private 192.168.0.10-11 interface lan1\n"
        "nat dynamic add global 10.0.0.2-10.0.0.3\n"
    )
    assert config.nat.static == (StaticNat(IPv4Address("192.168.0.1"), IPv4Address("198.51.100.1"), "vlan0"),)
    assert config.nat.dynamic == (
        DynamicNat("private", AddrRange(int(IPv4Address("192.168.0.10")), int(IPv4Address("192.168.0.11"))), "lan1"),
        DynamicNat("global", AddrRange(int(IPv4Address("10.0.0.2")), int(IPv4Address("10.0.0.3"))), "lan1"),
    )


def test_timeouts() -> None:
    timeouts = parse(
        "nat timeout 1h\n"
        "nat timeout protocol udp 300\n"
        "nat timeout protocol esp 2h30m\n"
        "nat timeout protocol gre 1d\n"
        "nat timeout protocol tcp-established 86400\n"
        "nat timeout protocol tcp-established system-default\n"
        "nat timeout dynamic 1m30s\n"
    ).nat.timeouts
    assert (timeouts.default, timeouts.udp, timeouts.esp, timeouts.gre) == (3600, 300, 9000, 86400)
    assert timeouts.tcp_established is None and timeouts.get("tcp-established") == 3600
    assert timeouts.dynamic == 90


def test_session_limits() -> None:
    session = parse(
        "nat session restricted-per-ip 100\n"
        "nat session restricted-per-private-ip 4096\n"
        "nat session maximum 1000\n"
        "nat session maximum system-default\n"
    ).nat.session
    assert (session.restricted_per_ip, session.restricted_per_private_ip, session.maximum) == (100, 4096, 65536)


def test_nat_reflect() -> None:
    nat = parse("nat reflect add interface lan0\nnat reflect add interface vlan2\n").nat
    assert nat.reflect == ("lan0", "vlan2")
    assert nat.reflect_mode is ReflectMode.ALL
    assert "lan0" not in nat.nat_interfaces()
    assert parse_one("nat option reflect listed").nat.reflect_mode is ReflectMode.LISTED
    with pytest.raises(ConfigError, match="t.conf:2:27: error: nat reflect is already on for lan0 \\(line 1\\)"):
        parse("nat reflect add interface lan0\nnat reflect add interface lan0\n", "t.conf")
    with pytest.raises(ConfigError, match="t.conf:1:16: error: missing interface <interface>"):
        parse("nat reflect add", "t.conf")
    with pytest.raises(ConfigError, match="t.conf:1:27: error: expected an interface name"):
        parse("nat reflect add interface eth0", "t.conf")
    warned = parse("nat napt add private 10.0.0.0/8 interface lan1\nnat reflect add interface lan1\n", "t.conf")
    assert warned.warnings == ("t.conf:2:27: warning: lan1 is a NAT interface: packets arriving on it are "
                               "translated inbound, never reflected (name the inside interface)",)


def test_issue_13_defaults_and_settings() -> None:
    from passnat.config.model import InboundRouting, UnicastRpf
    default = parse("")
    assert default.options.unicast_rpf is UnicastRpf.STRICT
    assert default.nat.inbound_routing is InboundRouting.NAT_ONLY
    assert default.nat.session.restricted_per_private_ip is None
    assert default.nat.session.private_ip_limit == 16384  # a quarter of 65536
    assert default.nat.timeouts.udp_unreplied is None
    c = parse("option ip unicast-rpf none\nnat option inbound-routing plain\n"
              "nat session restricted-per-private-ip 100000\nnat timeout protocol udp-unreplied 1m\n")
    assert c.options.unicast_rpf is UnicastRpf.NONE and c.nat.inbound_routing is InboundRouting.PLAIN
    assert c.nat.session.private_ip_limit == 100000 and c.nat.timeouts.udp_unreplied == 60
    c = parse("option ip unicast-rpf loose\noption ip unicast-rpf system-default\n"
              "nat option inbound-routing plain\nnat option inbound-routing system-default\n"
              "nat session maximum 400\nnat session restricted-per-private-ip 7\n"
              "nat session restricted-per-private-ip system-default\n")
    assert c.options.unicast_rpf is UnicastRpf.STRICT and c.nat.inbound_routing is InboundRouting.NAT_ONLY
    assert c.nat.session.private_ip_limit == 100


def test_nat_options() -> None:
    nat = parse(
        "nat option port-assignment random\n"
        "nat option esp-passthrough first-come\n"
        "nat option esp-pairing-window 250\n"
        "nat logging on\n"
    ).nat
    assert nat.port_assignment is PortAssignment.RANDOM
    assert nat.esp_mode is EspMode.FIRST_COME
    assert nat.esp_pairing_window == 0.25
    assert nat.logging is True
    assert parse_one("nat option port-assignment system-default").nat.port_assignment is PortAssignment.AUTO


# ------------------------------------------------------------------ filter


def test_filter_rule_fields() -> None:
    (rule,) = parse_one(
        'filter add FOO interface lan1 label "LAB" direction in action pass protocol tcpudp src 10.0.0.1/32 '
        "srcport 1111 dst 10.0.0.0-10.0.0.9 dstport 2222-2230 ipopts any state enable state-ttl 123 "
        "logging state-only disable"
    ).filters
    assert rule.name == "FOO" and rule.interface == "lan1" and rule.label == "LAB"
    assert (rule.direction, rule.action) == (FilterDirection.IN, FilterAction.PASS)
    assert (rule.protocol, rule.protocol_name) == (TCPUDP, "tcpudp")
    assert rule.src == AddrMatch("range", AddrRange.single("10.0.0.1"), text="10.0.0.1/32")
    assert rule.dst.text == "10.0.0.0-10.0.0.9" and rule.dst.range == AddrRange(167772160, 167772169)
    assert (rule.srcport, rule.dstport) == (PortRange(1111, 1111), PortRange(2222, 2230))
    assert (rule.ipopts, rule.state, rule.state_ttl, rule.logging, rule.enabled) == ("any", True, 123, "state-only", False)


def test_filter_defaults() -> None:
    (rule,) = parse_one("filter add a interface any direction in/out action block").filters
    assert rule.protocol is None and rule.src == ANY_ADDR and rule.dst == ANY_ADDR
    assert (rule.state, rule.logging, rule.enabled, rule.ipopts) == (False, "off", True, None)


@pytest.mark.parametrize(
    ("written", "protocol", "name"),
    [("any", None, None), ("tcp", 6, "tcp"), ("esp", 50, "esp"), ("gre", 47, "gre"), ("47", 47, None),
     ("tcp-established", "tcp-established", "tcp-established"), ("icmp", 1, "icmp")],
)
def test_filter_protocols(written: str, protocol: object, name: str | None) -> None:
    (rule,) = parse_one(f"filter add a interface lan0 direction in action pass protocol {written}").filters
    assert (rule.protocol, rule.protocol_name) == (protocol, name)


def test_filter_ports_without_protocol_mean_tcpudp() -> None:
    (rule,) = parse_one("filter add a interface lan0 direction in action pass dstport 500").filters
    assert (rule.protocol, rule.protocol_name) == (TCPUDP, "tcpudp")


def test_filter_addresses() -> None:
    (rule,) = parse_one("filter add a interface lan0 direction out action pass src lan0 dst self").filters
    assert rule.src == AddrMatch("interface", interface="lan0", text="lan0")
    assert rule.dst == AddrMatch("self", text="self")


def test_filter_positions_give_the_evaluation_order() -> None:
    config = parse(
        "filter add b interface lan0 direction in action pass\n"
        "filter add d interface lan0 direction in action pass bottom\n"
        "filter add a interface lan0 direction in action pass top\n"
        "filter add c interface lan0 direction in action pass above d\n"
        "filter add e interface lan0 direction in action pass below d\n"
        "filter add b2 interface lan0 direction in action pass below b\n"
    )
    assert [f.name for f in config.filters] == ["a", "b", "b2", "c", "d", "e"]


def test_filter_default() -> None:
    assert parse_one("filter default block").filter_default is FilterAction.BLOCK


def test_redirect_filters_are_skipped() -> None:
    config = parse_one("filter add r interface lan0 direction redirect action pass")
    assert config.filters == ()
    assert config.warnings == (
        "t.conf:1:39: warning: filter add ... direction redirect is not supported by passnat; line skipped",
    )


# ----------------------------------------------------------------- options


def test_fragment_requeueing_options() -> None:
    options = parse(
        "option ip fragment-requeueing off\n"
        "option ip fragment-requeueing-limit 64\n"
        "option ip fragment-requeueing-timeout 2\n"
    ).options
    assert (options.fragment_requeueing, options.fragment_requeueing_limit, options.fragment_requeueing_timeout) == (
        False, 64, 2.0,
    )


def test_reject_option() -> None:
    assert parse("").options.reject is RejectMode.LAN
    assert parse_one("option ip reject all").options.reject is RejectMode.ALL
    assert parse_one("option ip reject off").options.reject is RejectMode.OFF
    assert parse_one("option ip reject system-default").options.reject is RejectMode.LAN
    with pytest.raises(ConfigError, match="t.conf:1:18: error: expected one of: lan, all, off or system-default, got \"wan\""):
        parse("option ip reject wan", "t.conf")


def test_fragment_requeueing_typo_is_read_as_the_real_keyword() -> None:
    assert parse_one("option ip fragment-reqeueueing off").options.fragment_requeueing is False


def test_trailing_comments_and_crlf() -> None:
    config = parse("nat timeout 600   # ten minutes\r\n# whole line\r\n\r\n")
    assert config.nat.timeouts.default == 600


def test_every_handler_carries_its_seil_syntax() -> None:
    from passnat.config.commands import ALL_COMMANDS

    for command in ALL_COMMANDS:
        if command.handler is not None:
            doc = command.handler.__doc__ or ""
            assert doc.startswith(command.path), command.path
