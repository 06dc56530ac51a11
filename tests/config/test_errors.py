"""Malformed lines: each error names file, line, column and what was expected; all at once."""
from __future__ import annotations

import pytest

from passnat.config.errors import ConfigError
from passnat.config.parser import parse
from tests.config.helpers import errors_of

# (line, column, message)
MALFORMED: list[tuple[str, int, str]] = [
    ("nat static add 300.1.2.3 198.51.100.1", 16,
     'expected an IPv4 host address, got "300.1.2.3" (300 is more than 255)'),
    ("interface eth0 add 10.0.0.1/24", 11,
     'expected an interface name (lanN, vlanN, pppN, pppoeN, ipsecN or tunnelN), got "eth0"'),
    ("interface lan0 mtu 20", 20, 'expected an MTU 68-65535 or system-default, got "20" (out of range 68-65535)'),
    ("interface lan0 frobnicate 1", 16,
     'expected one of: add, address, description, mtu, tcp-mss, got "frobnicate"'),
    ("nat snapt add protocol esp listen 500 forward 192.168.0.10 500", 24,
     'expected one of: tcp, udp, tcpudp, got "esp" (listen/forward ports need one)'),
    ("nat snapt add protocol tcp listen 80-89 forward 192.168.0.10 8080-8081", 49,
     "forward ports 8080-8081 do not match listen ports 80-89: give 10 ports or only the first one"),
    ("nat snapt add protocol tcp forward 192.168.0.10", 24,
     "protocol tcp needs listen <port> and forward <IPv4address> <port>"),
    ("nat snapt add protocol tcp listen 80 forward 192.168.0.10 80 enable disable", 69,
     '"disable" repeats "enable" given at column 62'),
    ("nat napt add private 192.168.0.0/16 interface lan1 extra", 52,
     'expected interface or end of line, got "extra"'),
    ("nat timeout", 12, "expected seconds (e.g. 900 or 1h30m), got end of line"),
    ("nat timeout protocol udp -5", 26, 'expected seconds (e.g. 900 or 1h30m) or system-default, got "-5"'),
    ("nat timeout protocol dns 15", 22,
     'expected one of: tcp-synonly, tcp-established, udp, udp-unreplied, icmp, esp, gre, got "dns"'),
    ("nat session restricted-per-ip 5000", 31,
     'expected a session count 1-4096 or system-default, got "5000" (out of range 1-4096)'),
    ("nat session restricted-per-private-ip 0", 39,
     'expected a session count 1-16777216 or system-default, got "0" (out of range 1-16777216)'),
    ("option ip unicast-rpf strictly", 23, 'expected one of: strict, loose, none or system-default, got "strictly"'),
    ("nat option inbound-routing route", 28,
     'expected one of: nat-only, plain or system-default, got "route"'),
    ("nat option esp-pairing-window 50", 31,
     'expected milliseconds 100-2000 or system-default, got "50" (out of range 100-2000)'),
    ("route add 10.0.0.0/33 192.168.0.1", 11,
     'expected an IPv4 network <address>/<prefixlen> or default, got "10.0.0.0/33" (prefix length must be 0-32)'),
    ("filter add x interface lan0 direction sideways action pass", 39,
     'expected one of: in, out, in/out, redirect, got "sideways"'),
    ("filter add x interface lan0 action pass", 40, "missing direction {in|out|in/out}"),
    ("filter add all interface lan0 direction in action pass", 12, 'expected a filter name, got "all" ("all" is reserved)'),
    ("filter add x interface lan0 direction in action pass protocol esp dstport 500", 67,
     'dstport needs protocol tcp, udp, tcpudp, tcp-established or tcp-synonly, not "esp"'),
    ("filter add x interface lan0 direction in action pass protocol udp icmp-type 3", 67,
     "icmp-type needs protocol icmp"),
    ("filter add x interface lan0 direction in action pass state-ttl 30", 54, "state-ttl needs state enable"),
    ("filter add w interface pppoe* direction in action pass", 24,
     ('expected any or an interface name (lanN, vlanN, pppN, pppoeN, ipsecN or tunnelN), got "pppoe*" '
     "(interface wildcards are not supported by passnat)")),
    ("filter add x interface lan0 direction in action forward discard", 57,
     "action forward discard is not supported by passnat; use action block"),
    ("filter add x interface lan0 direction in action pass above nothere", 60,
     'no filter named "nothere" is configured before this line'),
    ('hostname "unterminated', 10, 'unterminated quoted string (missing closing ")'),
    ("frobnicate on", 1,
     'expected one of: filter, ha, hostname, interface, nat, option, route, got "frobnicate" (unknown command)'),
    ("nat", 4, "expected one of: dynamic, logging, napt, option, reflect, session, snapt, static, timeout, got end of line"),
    ("option ip fragment-requeueing maybe", 31, 'expected one of: on, off, got "maybe"'),
]


@pytest.mark.parametrize(("line", "column", "message"), MALFORMED, ids=[line for line, _, _ in MALFORMED])
def test_malformed_line(line: str, column: int, message: str) -> None:
    assert errors_of(line + "\n") == [f"t.conf:1:{column}: error: {message}"]


def test_every_error_of_a_file_is_reported_at_once() -> None:
    text = "\n".join(line for line, _, _ in MALFORMED) + "\n"
    errors = errors_of(text, "all.conf")
    expected = [f"all.conf:{n}:{column}: error: {message}" for n, (_, column, message) in enumerate(MALFORMED, 1)]
    assert errors == expected


@pytest.mark.parametrize(
    ("text", "error"),
    [
        (("filter add a interface lan0 direction in action pass\n"
         "filter add a interface lan1 direction in action pass\n"),
         't.conf:2:12: error: a filter named "a" already exists (line 1)'),
        (("nat snapt add protocol tcp listen 80-90 forward 192.168.0.1 80-90\n"
         "nat snapt add protocol tcpudp listen 90 forward 192.168.0.2 90\n"),
         "t.conf:2:15: error: this port forward overlaps the one on line 1 (same interface lan1)"),
        (("nat snapt add protocol esp forward 192.168.0.1 interface pppoe0\n"
         "nat snapt add protocol 50 forward 192.168.0.2 interface pppoe0\n"),
         "t.conf:2:15: error: this port forward overlaps the one on line 1 (same interface pppoe0)"),
        ("nat snapt add default 192.168.0.1\nnat snapt add default 192.168.0.2\n",
         "t.conf:2:15: error: this port forward overlaps the one on line 1 (same interface lan1)"),
        ("nat napt add global 198.51.100.1 interface pppoe0\nnat napt add global 198.51.100.2 interface pppoe0\n",
         "t.conf:2:21: error: interface pppoe0 already has a NAPT global address (line 1)"),
        ("nat static add 192.168.0.1 198.51.100.1\nnat static add 192.168.0.2 198.51.100.1\n",
         "t.conf:2:28: error: 198.51.100.1 is already a static NAT global address on lan1 (line 1)"),
        ("nat static add 192.168.0.1 198.51.100.1\nnat static add 192.168.0.1 198.51.100.2\n",
         "t.conf:2:28: error: 192.168.0.1 already has a static NAT mapping on lan1 (line 1)"),
        ("interface lan0 add 192.168.0.1/24\ninterface lan1 add 192.168.0.1/24\n",
         "t.conf:2:20: error: address 192.168.0.1 is already configured on lan0 (line 1)"),
        ("route add default 192.0.2.1\nroute add 0.0.0.0/0 192.0.2.2\n",
         "t.conf:2:21: error: a route to 0.0.0.0/0 with distance 1 is already configured (line 1)"),
        (("filter add f interface lan0 direction in action forward 10.0.0.1\n"
         "filter add g interface lan0 direction in action pass below f\n"),
         't.conf:2:60: error: filter "f" was skipped (line 1); cannot place a rule below it'),
    ],
)
def test_semantic_errors_name_the_earlier_line(text: str, error: str) -> None:
    assert errors_of(text) == [error]


def test_disabled_port_forwards_may_overlap() -> None:
    parse("nat snapt add protocol tcp listen 80 forward 192.168.0.1 80 disable\n"
          "nat snapt add protocol tcp listen 80 forward 192.168.0.2 80\n")


def test_config_error_carries_the_warnings_too() -> None:
    with pytest.raises(ConfigError) as info:
        parse("ppp add x\nnat timeout 0\n", "w.conf")
    assert [str(w) for w in info.value.warnings] == ["w.conf:1:1: warning: ppp is not supported by passnat; line skipped"]
    assert [str(e) for e in info.value.errors] == [
        'w.conf:2:13: error: expected seconds (e.g. 900 or 1h30m), got "0" (out of range 1-31536000 seconds)'
    ]
