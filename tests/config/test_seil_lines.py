"""Every SEIL line of reference/seil-syntax.md sections 2-6 for passnat's features parses.

Table-driven: the line, and the warnings it must give (none for lines
passnat implements; "line skipped" for real SEIL features it does not
have; "ignored" for parameters without effect in passnat).
"""
from __future__ import annotations

import pytest

from tests.config.helpers import parse_one

SKIPPED = "is not supported by passnat; line skipped"

# (line, expected warnings as (the token the warning points at, message))
LINES: list[tuple[str, list[tuple[str, str]]]] = [
    # -- section 2: interfaces
    ("interface lan0 add 192.168.0.1/24", []),
    ("interface lan1 add dhcp", [("dhcp", f"interface lan1 add dhcp {SKIPPED}")]),
    ("interface lan1 add dhcp classless-static-route on", [("dhcp", f"interface lan1 add dhcp {SKIPPED}")]),
    ("interface lan0 add 10.1.2.3", []),
    ("interface ipsec0 add 10.0.0.1/30 remote 10.0.0.2", [("remote", "remote is not supported by passnat; ignored")]),
    ("interface ppp0 address 10.0.0.1/32 remote 10.0.0.2", [("remote", "remote is not supported by passnat; ignored")]),
    ("interface ppp0 address 10.0.0.1", []),
    ("interface lan0 media auto", [("media", f"interface lan0 media {SKIPPED}")]),
    ("interface lan1 queue normal", [("queue", f"interface lan1 queue {SKIPPED}")]),
    ("interface pppoe0 over lan1", [("over", f"interface pppoe0 over {SKIPPED}")]),
    ("interface pppoe0 ppp-configuration PPP", [("ppp-configuration", f"interface pppoe0 ppp-configuration {SKIPPED}")]),
    ('interface lan1 description "IIJmio Hikari"', []),
    ("interface vlan0 tag 3", [("tag", f"interface vlan0 tag {SKIPPED}")]),
    ("interface ipsec0 mtu 1234", []),
    ("interface lan1 mtu 1454", []),
    ("interface lan1 tcp-mss 1400", []),
    ("interface lan1 tcp-mss auto", []),
    ("interface lan1 tcp-mss off", []),
    ("interface lan1 tcp-mss6 1380", [("tcp-mss6", f"interface lan1 tcp-mss6 {SKIPPED}")]),
    (
        ("ppp add pppoe-sample keepalive 30 ipcp enable ipcp-address on ipcp-dns on ipv6cp enable "
        'authentication-method chap identifier "" tcp-mss auto'),
        [("ppp", f"ppp {SKIPPED}")],
    ),
    # -- section 3: routing
    ("route add default pppoe0", []),
    ("route add default dhcp", [("dhcp", f"route add ... dhcp {SKIPPED}")]),
    ("route add 10.0.0.0/8 192.168.0.254 distance 10", []),
    ("route add 10.1.0.0/16 discard distance system-default metric system-default keepalive off", []),
    ("route add 10.2.0.0/16 lan0 metric 5", [("metric", "route metric (used by RIP only) is not supported by passnat; ignored")]),
    (
        ("route add 10.3.0.0/16 192.168.0.254 keepalive on target 10.3.0.1 send-interval 10 timeout 5 "
        "down-count 3 up-count 3 src 192.168.0.1"),
        [("keepalive", "route keepalive is not supported by passnat; ignored")],
    ),
    # -- section 4: NAT
    ("nat napt add private 192.168.0.0-192.168.255.255 interface pppoe0", []),
    ("nat napt add global 10.0.0.1", []),
    ("nat napt add private 192.168.0.1-192.168.0.255 interface lan1", []),
    ("nat option port-assignment random", []),
    ("nat snapt add protocol tcp listen 80-80 forward 192.168.0.1 81-81 enable interface lan1", []),
    ("nat snapt add protocol tcp listen 90-90 forward 192.168.0.2 91-91 disable interface vlan0", []),
    ("nat snapt add protocol 41 forward 192.168.0.6 enable interface vlan0", []),
    ("nat snapt add default 192.168.0.1 interface lan1", []),
    ("nat snapt add protocol tcp listen 80 forward 192.168.0.1 81", []),
    ("nat snapt add protocol 50 forward 192.168.0.10 interface pppoe0", []),
    ("nat static add 192.168.0.1 198.51.100.1 interface vlan0", []),
    ("nat dynamic add private 192.168.0.10-11 interface lan1", []),
    ("nat dynamic add global 10.0.0.2-10.0.0.3 interface lan1", []),
    ("nat bypass add 192.168.0.1 198.51.100.1 interface vlan0", [("bypass", f"nat bypass {SKIPPED}")]),
    ("nat reflect add interface lan0", []),
    ("nat proxy sip add port 5060 protocol tcpudp", [("proxy", f"nat proxy {SKIPPED}")]),
    ("nat proxy sip add port 5060 protocol udp", [("proxy", f"nat proxy {SKIPPED}")]),
    ("nat timeout 900", []),
    ("nat timeout 123", []),
    ("nat timeout protocol tcp-synonly 234", []),
    ("nat timeout protocol tcp-established system-default", []),
    ("nat timeout protocol udp 300", []),
    ("nat timeout protocol icmp 30", []),
    ("nat timeout dynamic 600", []),
    ("nat session restricted-per-ip 100", []),
    ("nat session restricted-per-ip system-default", []),
    ("nat session restricted-per-private-ip 4096", []),
    ("nat logging off", []),
    ("nat upnp off", [("upnp", f"nat upnp {SKIPPED}")]),
    ("nat upnp on", [("upnp", f"nat upnp {SKIPPED}")]),
    ("nat upnp interface lan1", [("upnp", f"nat upnp {SKIPPED}")]),
    ("nat upnp timeout 1234", [("upnp", f"nat upnp {SKIPPED}")]),
    ("nat upnp timeout type arp", [("upnp", f"nat upnp {SKIPPED}")]),
    ("arp reply-nat on", [("arp", f"arp {SKIPPED}")]),
    (
        "nat6 add n1 type ngn internal 2001:db8::/64 external 2001:db8:1::/64 interface lan1 ndproxy on",
        [("nat6", f"nat6 {SKIPPED}")],
    ),
    # -- section 5: filter
    (
        ("filter add seil_ctl_lan0 interface lan0 direction in action pass protocol tcp src 192.168.0.0/24 "
        "srcport 0-65535 dst self dstport 0-65535 state disable logging off enable"),
        [],
    ),
    (
        ("filter add telnetd_block interface any direction in action block protocol tcp srcport 0-65535 "
        "dst self dstport 23 state disable logging on enable"),
        [],
    ),
    (
        ("filter add httpd_block interface any direction in action block protocol tcp srcport 0-65535 "
        "dst self dstport 80 state disable logging on enable"),
        [],
    ),
    (
        ('filter add FOO interface lan1 label "LAB" direction in action pass protocol tcpudp src 10.0.0.1/32 '
        "srcport 1111 dst 10.0.0.2/32 dstport 2222 ipopts any keepalive 10.0.0.3 state enable "
        "state-ttl 123 logging state-only"),
        [("keepalive", "filter keepalive is not supported by passnat; ignored")],
    ),
    ("filter add FOO interface vlan0 direction in/out action pass state disable logging on enable", []),
    (
        "filter add FOO interface vlan0 direction in action forward 192.168.0.1",
        [("forward", f"filter add ... action forward {SKIPPED}")],
    ),
    # -- section 6: options
    ("option ip fragment-requeueing on", []),
    ("option ip fragment-requeueing off", []),
    (
        "option ip fragment-reqeueueing on",
        [("fragment-reqeueueing", "fragment-reqeueueing is a misspelling of fragment-requeueing; read as fragment-requeueing")],
    ),
    ("option ip monitor-linkstate on", [("monitor-linkstate", f"option ip monitor-linkstate {SKIPPED}")]),
    ("option ip redirects off", [("redirects", f"option ip redirects {SKIPPED}")]),
    ("option ip directed-broadcast on", [("directed-broadcast", f"option ip directed-broadcast {SKIPPED}")]),
    ("option ip update-connected-route on", [("update-connected-route", f"option ip update-connected-route {SKIPPED}")]),
    ("option ip accept-redirect off", [("accept-redirect", f"option ip accept-redirect {SKIPPED}")]),
    ("option ip broadcast-icmp ignore", [("broadcast-icmp", f"option ip broadcast-icmp {SKIPPED}")]),
    ("option ip mask-reply off", [("mask-reply", f"option ip mask-reply {SKIPPED}")]),
    ("option ip recursive-lookup off", [("recursive-lookup", f"option ip recursive-lookup {SKIPPED}")]),
    ("option ip unicast-rpf none", []),
    ("option ip unicast-rpf strict", []),
    ("option ip unicast-rpf loose", []),
    ("option ip unicast-rpf system-default", []),
    ("option ipv6 fragment-requeueing on", [("ipv6", f"option ipv6 {SKIPPED}")]),
    # -- passnat extensions of this issue (R26, R27)
    ("nat option reflect listed", []),
    ("nat option reflect system-default", []),
    ("option ip reject all", []),
    ("option ip reject off", []),
    ("option ip reject system-default", []),
]


def column_of(line: str, word: str) -> int:
    """The 1-based column of the first token of ``line`` equal to ``word``."""
    tokens = line.split(" ")
    index = tokens.index(word)
    return sum(len(t) + 1 for t in tokens[:index]) + 1


@pytest.mark.parametrize(("line", "warnings"), LINES, ids=[line for line, _ in LINES])
def test_seil_line_parses(line: str, warnings: list[tuple[str, str]]) -> None:
    config = parse_one(line)
    expected = [f"t.conf:1:{column_of(line, word)}: warning: {message}" for word, message in warnings]
    assert list(config.warnings) == expected
