"""Canonical rendering, and the round trip ``parse(render(c)) == c``."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from passnat.config.errors import ConfigError
from passnat.config.model import Config
from passnat.config.parser import parse
from passnat.config.render import quote, render
from tests.config.helpers import DATA, parse_one

#: the lines every rendering ends with when nothing else is set
TRAILER = ["nat timeout 900", "nat logging off", "option ip fragment-requeueing on", "option ip unicast-rpf strict"]


def body(config: Config) -> list[str]:
    return [line for line in render(config).splitlines() if line not in TRAILER]


@pytest.mark.parametrize(
    ("line", "rendered"),
    [
        ("hostname gw1", 'hostname "gw1"'),
        ('interface lan1 description "say \\"hi\\" \\\\o/"', 'interface lan1 description "say \\"hi\\" \\\\o/"'),
        ("interface lan1 address 10.1.2.3", "interface lan1 add 10.1.2.3/8"),
        ("interface pppoe0 tcp-mss 1400", "interface pppoe0 tcp-mss 1400"),
        ("route add 0.0.0.0/0 192.0.2.1", "route add default 192.0.2.1"),
        ("route add 10.0.0.1 lan0 distance 5 metric 1", "route add 10.0.0.1/32 lan0 distance 5"),
        ("route add 10.0.0.0/8 discard distance system-default", "route add 10.0.0.0/8 discard"),
        ("nat napt add private 192.168.0.0/16", "nat napt add private 192.168.0.0-192.168.255.255 interface lan1"),
        ("nat napt add private 192.168.0.10-11 interface lan0",
         "nat napt add private 192.168.0.10-192.168.0.11 interface lan0"),
        ("nat snapt add protocol tcp listen 80 forward 192.168.0.1 81",
         "nat snapt add protocol tcp listen 80-80 forward 192.168.0.1 81-81 enable interface lan1"),
        ("nat snapt add interface vlan0 disable forward 192.168.0.2 9000 listen 90-99 protocol udp",
         "nat snapt add protocol udp listen 90-99 forward 192.168.0.2 9000-9009 disable interface vlan0"),
        ("nat snapt add protocol esp forward 192.168.0.10", "nat snapt add protocol esp forward 192.168.0.10 enable interface lan1"),
        ("nat snapt add protocol 41 forward 192.168.0.6 enable interface vlan0",
         "nat snapt add protocol 41 forward 192.168.0.6 enable interface vlan0"),
        ("nat snapt add default 192.168.0.1", "nat snapt add default 192.168.0.1 interface lan1"),
        ("nat static add 192.168.0.1 198.51.100.1", "nat static add 192.168.0.1 198.51.100.1 interface lan1"),
        ("nat timeout protocol esp 1h", "nat timeout protocol esp 3600"),
        ("nat option esp-passthrough first-come", "nat option esp-passthrough first-come"),
        ("nat option esp-passthrough spi", None),
        ("nat option esp-pairing-window 300", "nat option esp-pairing-window 300"),
        ("nat session maximum 65536", None),
        ("filter add a interface lan0 direction in action pass dstport 500",
         ("filter add a interface lan0 direction in action pass protocol tcpudp dstport 500 "
         "state disable logging off enable")),
        ("filter add a interface any action block logging on direction out protocol esp dst 10.0.0.0/8 label x",
         ('filter add a interface any direction out action block protocol esp dst 10.0.0.0/8 '
         'state disable logging on label "x" enable')),
        (("filter add a interface lan0 direction in action pass protocol icmp icmp-type 8 src 10.0.0.1-10.0.0.5 "
         "ipopts none state enable state-ttl normal disable"),
         ("filter add a interface lan0 direction in action pass protocol icmp icmp-type 8 src 10.0.0.1-10.0.0.5 "
         "ipopts none state enable logging off disable")),
        ("filter default block", "filter default block"),
        ("option ip fragment-requeueing-timeout 3", "option ip fragment-requeueing-timeout 3"),
        ("nat reflect add interface lan0", "nat reflect add interface lan0"),
        ("nat option reflect listed", "nat option reflect listed"),
        ("nat option reflect all", None),
        ("option ip reject all", "option ip reject all"),
        ("option ip reject lan", None),
    ],
)
def test_canonical_line(line: str, rendered: str | None) -> None:
    assert body(parse_one(line)) == ([rendered] if rendered else [])


def test_sections_come_in_show_config_order() -> None:
    config = parse(
        "option ip fragment-requeueing off\n"
        "nat napt add private 192.168.0.0/24\n"
        "filter add a interface lan0 direction in action pass\n"
        "route add default 192.0.2.1\n"
        "interface lan0 add 192.0.2.2/24\n"
        "hostname h\n"
    )
    assert [line.split()[0] for line in render(config).splitlines()] == [
        "hostname", "interface", "route", "filter", "nat", "nat", "nat", "option", "option",
    ]


def test_quote_escapes_quotes_and_backslashes() -> None:
    assert quote('a"b\\c') == '"a\\"b\\\\c"'


@pytest.mark.parametrize("name", ["seil-syntax-example.conf", "seil-factory-default.conf"])
def test_round_trip_of_example_files(name: str) -> None:
    config = parse((DATA / name).read_text())
    assert parse(render(config)) == config


RICH = """\
hostname "gw \\"one\\""
interface lan0 add 192.168.0.1/24
interface lan0 add 192.168.10.1/24
interface lan0 description "LAN ＆ Wi-Fi"
interface pppoe0 address 198.51.100.2/32
interface pppoe0 mtu 1454
interface pppoe0 tcp-mss auto
interface lan1 tcp-mss 1380
route add default pppoe0
route add 10.0.0.0/8 192.168.0.254 distance 20
route add 10.0.0.0/8 discard distance 250
filter add ike interface pppoe0 direction in action pass protocol udp dst 192.168.0.10 dstport 500 state disable
filter add natt interface pppoe0 direction in action pass protocol udp dst 192.168.0.10 dstport 4500 above ike
filter add esp interface pppoe0 direction in action pass protocol 50 dst 192.168.0.10
filter add pptp interface pppoe0 direction in action pass protocol tcp dstport 1723 top
filter add gre interface pppoe0 direction in action pass protocol gre label "PPTP data"
filter add out interface pppoe0 direction out action pass state enable state-ttl 600 logging state-only
filter add ping interface any direction in action pass protocol icmp icmp-type 8 src 203.0.113.0/24 dst self
filter add opts interface lan0 direction in/out action block ipopts 7 src lan0 disable
filter add rest interface pppoe0 direction in action block logging on
filter default block
nat timeout 1800
nat timeout protocol tcp-synonly 30
nat timeout protocol udp 300
nat timeout protocol udp-unreplied 20
nat timeout protocol esp 2h
nat timeout protocol gre 7200
nat timeout dynamic 600
nat logging on
nat napt add global 198.51.100.2 interface pppoe0
nat napt add private 192.168.0.0/16 interface pppoe0
nat snapt add protocol tcp listen 1723 forward 192.168.0.10 1723 interface pppoe0
nat snapt add protocol esp forward 192.168.0.10 interface pppoe0
nat snapt add protocol 47 forward 192.168.0.11 disable interface pppoe0
nat snapt add protocol tcpudp listen 6000-6009 forward 192.168.0.12 7000 interface pppoe0
nat snapt add default 192.168.0.13 interface pppoe0
nat static add 192.168.0.20 198.51.100.20 interface pppoe0
nat dynamic add global 198.51.100.30-40 interface pppoe0
nat dynamic add private 192.168.1.0/24 interface pppoe0
nat session restricted-per-ip 512
nat session restricted-per-private-ip 8000
nat session maximum 20000
nat option port-assignment random
nat option esp-passthrough first-come
nat option esp-pairing-window 1500
nat option inbound-routing plain
option ip unicast-rpf loose
option ip fragment-requeueing off
option ip fragment-requeueing-limit 64
option ip fragment-requeueing-timeout 10
"""


def test_round_trip_of_a_rich_config() -> None:
    config = parse(RICH)
    assert config.warnings == ()
    text = render(config)
    assert parse(text) == config
    assert render(parse(text)) == text
    assert [f.name for f in config.filters][:3] == ["pptp", "natt", "ike"]


# ------------------------------------------------------------- hypothesis

_interfaces = st.sampled_from(["lan0", "lan1", "vlan2", "pppoe0", "ipsec1", "tunnel3", "ppp0"])
_hosts = st.builds("192.168.{}.{}".format, st.integers(0, 3), st.integers(0, 255)) | st.sampled_from(
    ["198.51.100.1", "203.0.113.9", "10.0.0.1", "0.0.0.0", "256.1.1.1"]
)
_ports = st.integers(0, 65535).map(str) | st.tuples(st.integers(0, 65535), st.integers(0, 65535)).map(
    lambda p: f"{min(p)}-{max(p)}"
)
_strings = st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=10).map(quote)
_words = st.sampled_from(
    ["tcp", "udp", "tcpudp", "esp", "gre", "ah", "any", "47", "300", "icmp", "tcp-synonly", "system-default"]
)
_names = st.sampled_from(["a", "b", "c", "d", "e", "F_1"])


def _line(template: str, *parts: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.tuples(*parts).map(lambda values: template.format(*values))


def _filter_line() -> st.SearchStrategy[str]:
    optional = {
        "protocol": _words,
        "icmp-type": st.sampled_from(["any", "0", "8", "300"]),
        "src": _hosts | st.sampled_from(["self", "any", "lan0", "10.0.0.0/8", "10.0.0.1-10.0.0.9"]),
        "srcport": _ports,
        "dst": _hosts | st.sampled_from(["self", "10.1.0.0/16"]),
        "dstport": _ports,
        "ipopts": st.sampled_from(["none", "any", "7"]),
        "state": st.sampled_from(["enable", "disable"]),
        "state-ttl": st.sampled_from(["normal", "60"]),
        "logging": st.sampled_from(["on", "off", "state-only"]),
        "label": _strings,
        "above": _names,
        "below": _names,
    }

    def keyword(key: str) -> st.SearchStrategy[str]:
        return optional[key].map(lambda value: f"{key} {value}")

    chosen = st.sets(st.sampled_from(sorted(optional)), max_size=5).flatmap(
        lambda keys: st.tuples(*(keyword(k) for k in sorted(keys)))
    )
    required = st.tuples(
        _interfaces.map("interface {}".format) | st.just("interface any"),
        st.sampled_from(["direction in", "direction out", "direction in/out"]),
        st.sampled_from(["action pass", "action block"]),
    )
    flags = st.lists(st.sampled_from(["enable", "disable", "top", "bottom"]), max_size=1)
    words = st.tuples(required, chosen, flags).map(lambda t: [*t[0], *t[1], *t[2]]).flatmap(st.permutations)
    return st.tuples(_names, words).map(lambda t: f"filter add {t[0]} " + " ".join(t[1]))


LINES = st.one_of(
    _line("hostname {}", _strings),
    _line("interface {} add {}/{}", _interfaces, _hosts, st.integers(8, 32).map(str)),
    _line("interface {} address {}", _interfaces, _hosts),
    _line("interface {} mtu {}", _interfaces, st.sampled_from(["1500", "1454", "68", "system-default"])),
    _line("interface {} tcp-mss {}", _interfaces, st.sampled_from(["auto", "off", "1400"])),
    _line("interface {} description {}", _interfaces, _strings),
    _line("route add {} {} distance {}", st.sampled_from(["default", "10.0.0.0/8", "10.1.2.3"]),
          _hosts | _interfaces | st.just("discard"), st.sampled_from(["1", "7", "system-default"])),
    _line("nat napt add private {} interface {}", _hosts | st.sampled_from(["192.168.0.0/16", "10.0.0.1-9"]),
          _interfaces),
    _line("nat napt add global {} interface {}", _hosts, _interfaces),
    _line("nat snapt add protocol {} listen {} forward {} {} {}", _words, _ports, _hosts, _ports,
          st.sampled_from(["enable", "disable", "interface pppoe0"])),
    _line("nat snapt add protocol {} forward {} interface {}", _words, _hosts, _interfaces),
    _line("nat snapt add default {} interface {}", _hosts, _interfaces),
    _line("nat static add {} {} interface {}", _hosts, _hosts, _interfaces),
    _line("nat dynamic add {} {}", st.sampled_from(["private", "global"]), _hosts),
    _line("nat timeout {}", st.sampled_from(["900", "1h", "15m30s", "0"])),
    _line("nat timeout protocol {} {}", st.sampled_from(["udp", "udp-unreplied", "esp", "gre", "icmp",
                                                         "tcp-established"]),
          st.sampled_from(["30", "2h", "system-default"])),
    _line("nat timeout dynamic {}", st.sampled_from(["600", "system-default"])),
    _line("nat session {} {}", st.sampled_from(["restricted-per-ip", "restricted-per-private-ip", "maximum"]),
          st.sampled_from(["1", "4096", "50000", "system-default"])),
    _line("nat option {}", st.sampled_from(["port-assignment random", "port-assignment auto",
                                            "esp-passthrough first-come", "esp-pairing-window 150",
                                            "inbound-routing plain", "inbound-routing nat-only"])),
    _line("nat logging {}", st.sampled_from(["on", "off"])),
    _line("nat reflect add interface {}", _interfaces),
    _line("nat option reflect {}", st.sampled_from(["all", "listed", "system-default"])),
    _filter_line(),
    _line("filter default {}", st.sampled_from(["pass", "block"])),
    _line("option ip {}", st.sampled_from(["fragment-requeueing off", "fragment-requeueing-limit 10",
                                          "fragment-requeueing-timeout 9", "redirects off",
                                          "reject all", "reject off", "reject lan", "unicast-rpf none",
                                          "unicast-rpf loose", "unicast-rpf system-default"])),
    st.sampled_from(["ppp add x tcp-mss auto", "dhcp enable", "interface lan1 media auto"]),
)


def parse_valid_lines(text: str) -> Config:
    """Parse ``text``, dropping the lines that have errors until none is left."""
    lines = text.splitlines()
    while True:
        try:
            return parse("\n".join(lines))
        except ConfigError as error:
            bad = {problem.line for problem in error.errors}
            lines = [line if n not in bad else "" for n, line in enumerate(lines, 1)]


@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.lists(LINES, max_size=25))
def test_round_trip_of_generated_configs(lines: list[str]) -> None:
    config = parse_valid_lines("\n".join(lines))
    text = render(config)
    assert parse(text) == config
    assert render(parse(text)) == text


@settings(deadline=None)
@given(st.text(max_size=200) | st.lists(_words | _interfaces | _hosts | st.sampled_from(
    ["nat", "snapt", "add", "filter", "interface", "route", '"', "#", "listen", "forward"]), max_size=12).map(" ".join))
def test_parse_raises_only_config_error(text: str) -> None:
    try:
        parse(text)
    except ConfigError:
        pass
