"""Packets a router must not forward (issue 13 §3, R28), in the engine with a fake clock.

* strict reverse-path check by default (BCP 38 / RFC 3704): a packet's source must
  route back out of the interface it arrived on (``spoofed_source``);
  ``option ip unicast-rpf loose`` wants only some route, ``none`` no check;
* nothing from a NAT interface reaches an inside interface unless a NAT session,
  SNAPT, static or dynamic NAT translated it or a filter pass rule (or its state)
  let it through (``inbound_untranslated``); ``nat option inbound-routing plain``
  routes such packets again;
* TCP flag combinations no stack sends never make a session and are dropped
  (``tcp_invalid_flags``), on new and on established flows;
* IPv4 LSRR/SSRR options are dropped (``ip_source_route``, RFC 7126), options with
  a malformed length too (``bad_ip_options``); other options pass.
"""
from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.all import GRE, ICMP, IP, UDP, raw  # type: ignore[attr-defined]

from passnat.nat.drops import Drop
from passnat.packet.ipv4 import check_options, set_header_checksum
from passnat.packet.tcp import VALID_FLAGS, VALID_FLAGS_MASK
from tests.nat.helpers import PC1, SRV, WAN_ADDR, counters, make_router, one, ping, tcp, udp

BASE_NO_DEFAULT = """\
interface lan0 add 192.168.0.1/24
interface lan1 add 203.0.113.1/24
nat napt add private 192.168.0.0-192.168.0.255 interface lan1
"""


# ------------------------------------------------------------------ reverse path


@pytest.mark.parametrize(("src", "iface"), [
    ("10.9.9.9", "lan0"),        # not on the LAN: routes back out of the WAN
    ("203.0.113.77", "lan0"),    # the WAN's subnet, from the LAN
    ("192.168.0.99", "lan1"),    # a LAN address from the WAN
])
def test_spoofed_sources_are_dropped_by_default(src: str, iface: str) -> None:
    r = make_router()
    dst = SRV if iface == "lan0" else WAN_ADDR
    for pkt in (udp(src, dst, 5000, 9000), tcp(src, dst, 5000, 80, "S"), ping(src, dst, 3),
                raw(IP(src=src, dst=dst, proto=50) / (b"\0\0\x10\x01\0\0\0\x01" + b"e" * 16))):
        assert r.handle(iface, pkt, 0.0) == []
    assert counters(r) == {"spoofed_source": 4, "slow_path_packets": 4}
    assert r.sessions(0.0) == []


def test_loose_and_none_let_a_routable_source_through() -> None:
    for mode in ("loose", "none"):
        r = make_router(f"option ip unicast-rpf {mode}\n")
        out = one(r.handle("lan0", udp("10.9.9.9", SRV, 5000, 9000), 0.0), "lan1")
        assert out.src == "10.9.9.9"  # outside every NAT range: routed untranslated (as before)
        assert "spoofed_source" not in counters(r)


def test_a_source_without_a_route_back_fails_strict_and_loose() -> None:
    for mode, dropped in (("strict", True), ("loose", True), ("none", False)):
        r = make_router(f"option ip unicast-rpf {mode}\n", base=BASE_NO_DEFAULT)
        assert r.handle("lan0", udp(PC1, "203.0.113.10", 5000, 9000), 0.0)  # on-link: fine
        r.handle("lan1", udp("198.51.100.7", WAN_ADDR, 9000, 5000), 0.0)  # no route back to it
        assert (counters(r).get("spoofed_source", 0) == 1) == dropped, mode


def test_sources_behind_a_static_route_and_on_discard_routes() -> None:
    r = make_router("route add 10.1.0.0/16 192.168.0.254\nroute add 10.66.0.0/16 discard\n"
                    "nat napt add private 10.1.0.0/16 interface lan1\n")
    out = one(r.handle("lan0", udp("10.1.2.3", SRV, 5000, 9000), 0.0), "lan1")  # routed back via lan0: fine
    assert out.src == WAN_ADDR
    assert not r.handle("lan0", udp("10.66.0.5", SRV, 5000, 9000), 0.0)
    assert not r.handle("lan1", udp("10.66.0.5", WAN_ADDR, 9000, 5000), 0.0)
    assert counters(r)["spoofed_source"] == 2


def test_the_router_itself_is_reachable_from_each_side() -> None:
    r = make_router()
    assert one(r.handle("lan0", ping(PC1, "192.168.0.1", 1), 0.0), "lan0")
    assert one(r.handle("lan1", ping(SRV, WAN_ADDR, 1), 0.0), "lan1")


# ------------------------------------------------------------------ WAN -> inside


def direct(dst: str = PC1) -> list[bytes]:
    """Packets from the internet addressed straight to an inside host."""
    return [tcp(SRV, dst, 5555, 22, "S"), udp(SRV, dst, 5555, 53), ping(SRV, dst, 4),
            raw(IP(src=SRV, dst=dst, proto=50) / (b"\0\0\x20\x01\0\0\0\x01" + b"e" * 16)),
            raw(IP(src=SRV, dst=dst) / GRE() / b"payload")]


def test_direct_to_lan_packets_are_dropped_by_default() -> None:
    r = make_router()
    for pkt in direct():
        assert r.handle("lan1", pkt, 0.0) == []
    assert counters(r) == {"inbound_untranslated": 5, "slow_path_packets": 5}


def test_inbound_routing_plain_routes_them_again() -> None:
    r = make_router("nat option inbound-routing plain\n")
    for pkt in direct():
        assert one(r.handle("lan1", pkt, 0.0), "lan0").dst == PC1


@pytest.mark.parametrize("rule", [
    "filter add ssh interface lan1 direction in action pass protocol tcp dst 192.168.0.11 dstport 22\n",
    "filter add ssh interface lan0 direction out action pass protocol tcp dst 192.168.0.11 dstport 22\n",
])
def test_an_explicit_filter_pass_rule_lets_one_service_in(rule: str) -> None:
    r = make_router(rule)
    assert one(r.handle("lan1", tcp(SRV, PC1, 5555, 22, "S"), 0.0), "lan0")
    for pkt in direct()[1:]:  # the rest matches no rule: the default pass is not enough
        assert r.handle("lan1", pkt, 0.0) == []
    assert counters(r)["inbound_untranslated"] == 4


def test_a_blocking_rule_still_counts_as_a_filter_block() -> None:
    r = make_router("filter add no interface lan0 direction out action block protocol udp\n")
    assert r.handle("lan1", udp(SRV, PC1, 5555, 53), 0.0) == []
    assert counters(r)["filter_block"] == 1 and "inbound_untranslated" not in counters(r)


def test_nat_sessions_snapt_and_static_nat_still_reach_inside() -> None:
    r = make_router("nat snapt add protocol tcp listen 2222 forward 192.168.0.50 22 interface lan1\n"
                    "nat static add 192.168.0.12 203.0.113.5 interface lan1\n")
    out = one(r.handle("lan0", udp(PC1, SRV, 5000, 9000), 0.0), "lan1")
    assert one(r.handle("lan1", udp(SRV, WAN_ADDR, 9000, out[UDP].sport), 0.1), "lan0").dst == PC1
    assert one(r.handle("lan1", tcp(SRV, WAN_ADDR, 6000, 2222, "S"), 0.2), "lan0").dst == "192.168.0.50"
    assert one(r.handle("lan1", tcp(SRV, "203.0.113.5", 6000, 80, "S"), 0.3), "lan0").dst == "192.168.0.12"
    assert "inbound_untranslated" not in counters(r)


def test_a_routed_host_outside_the_nat_ranges_needs_plain_routing_for_its_replies() -> None:
    cfg = ("interface lan0 add 192.168.0.1/24\ninterface lan1 add 203.0.113.1/24\nroute add default 203.0.113.254\n"
           "nat napt add private 192.168.0.0-192.168.0.127 interface lan1\n")
    for extra, delivered in (("", False), ("nat option inbound-routing plain\n", True)):
        r = make_router(extra, base=cfg)
        assert one(r.handle("lan0", udp("192.168.0.200", SRV, 5000, 9000), 0.0), "lan1").src == "192.168.0.200"
        back = r.handle("lan1", udp(SRV, "192.168.0.200", 9000, 5000), 0.1)
        assert bool(back) == delivered


def test_a_router_without_nat_routes_as_before() -> None:
    r = make_router(base="interface lan0 add 192.168.0.1/24\ninterface lan1 add 203.0.113.1/24\n"
                         "route add default 203.0.113.254\n")
    assert one(r.handle("lan1", udp(SRV, PC1, 9000, 5000), 0.0), "lan0")


# ------------------------------------------------------------------ TCP flags


def test_every_flag_combination_of_a_first_segment() -> None:
    """All 256 flag bytes, outbound and to a SNAPT port: a session only for a combination a TCP
    stack sends; the others dropped and counted, never forwarded."""
    r = make_router("nat snapt add protocol tcp listen 2222 forward 192.168.0.50 22 interface lan1\n")
    invalid = 0
    for flags in range(256):
        valid = VALID_FLAGS[flags & VALID_FLAGS_MASK]
        invalid += not valid
        before = len(r.table)
        out = r.handle("lan0", tcp(PC1, SRV, 10000 + flags, 80, flags), 0.0)
        assert bool(out) == valid and len(r.table) == before + valid, flags
        before = len(r.table)
        out = r.handle("lan1", tcp(SRV, WAN_ADDR, 10000 + flags, 2222, flags), 0.0)
        assert bool(out) == valid and len(r.table) == before + valid, flags
    assert counters(r)["tcp_invalid_flags"] == 2 * invalid


@pytest.mark.parametrize(("flags", "name"), [
    ("SF", "SYN+FIN"), ("SR", "SYN+RST"), ("", "no flags"), ("FPU", "FIN+PSH+URG"), ("F", "FIN alone"),
    ("SFPU", "SYN+FIN+PSH+URG"), ("RF", "RST+FIN"), ("P", "PSH alone"),
])
def test_impossible_combinations_are_dropped(flags: str, name: str) -> None:
    r = make_router()
    assert r.handle("lan0", tcp(PC1, SRV, 4000, 80, flags), 0.0) == [], name
    assert counters(r)["tcp_invalid_flags"] == 1 and r.sessions(0.0) == []


# ------------------------------------------------------------------ IPv4 options


def with_options(options: bytes, src: str = PC1, dst: str = SRV) -> bytes:
    """A UDP packet whose IPv4 header carries the bytes ``options`` as they are (padded to 4 bytes
    with EOL), with a right header checksum (built by hand: scapy would parse the options)."""
    opts = options + b"\0" * (-len(options) % 4)
    plain = bytearray(udp(src, dst, 5000, 9000))
    pkt = bytearray(plain[:20]) + opts + plain[20:]
    pkt[0] = 0x40 | (5 + len(opts) // 4)
    struct.pack_into("!H", pkt, 2, len(pkt))
    set_header_checksum(pkt, 20 + len(opts))
    return bytes(pkt)


@pytest.mark.parametrize(("options", "reason"), [
    (bytes([131, 7, 4, 198, 51, 100, 9]), "ip_source_route"),       # LSRR
    (bytes([137, 7, 4, 198, 51, 100, 9]), "ip_source_route"),       # SSRR
    (bytes([1, 1, 131, 7, 4, 1, 2, 3, 4]), "ip_source_route"),      # after NOPs
    (bytes([7, 0, 4, 0]), "bad_ip_options"),                         # length 0
    (bytes([7, 1, 4, 0]), "bad_ip_options"),                         # length 1
    (bytes([7, 12, 4, 0]), "bad_ip_options"),                        # past the header's end
    (bytes([1, 1, 1, 68]), "bad_ip_options"),                        # the length byte is missing
])
def test_source_route_and_malformed_options_are_dropped(options: bytes, reason: str) -> None:
    r = make_router()
    assert r.handle("lan0", with_options(options), 0.0) == []
    assert counters(r)[reason] == 1 and r.sessions(0.0) == []


@pytest.mark.parametrize("options", [
    bytes([7, 7, 4, 0, 0, 0, 0]),          # record route
    bytes([68, 8, 5, 0, 0, 0, 0, 0]),      # timestamp
    bytes([148, 4, 0, 0]),                 # router alert
    bytes([1, 1, 1, 1]),                   # NOPs
    bytes([0, 131, 7, 4]),                 # after EOL nothing is read
])
def test_other_options_pass_unchanged(options: bytes) -> None:
    r = make_router()
    out = one(r.handle("lan0", with_options(options), 0.0), "lan1")
    assert raw(out)[20:20 + len(options)] == options
    assert out.src == WAN_ADDR


def reference(opts: bytes) -> str | None:
    """An independent reading of RFC 791's option list: 'route', 'bad' or None."""
    pos = 0
    while pos < len(opts):
        t = opts[pos]
        if t == 0:
            break
        if t == 1:
            pos += 1
            continue
        if pos + 2 > len(opts) or opts[pos + 1] < 2 or pos + opts[pos + 1] > len(opts):
            return "bad"
        if t in (131, 137):
            return "route"
        pos += opts[pos + 1]
    return None


@settings(max_examples=400, deadline=None)
@given(st.binary(min_size=1, max_size=40).map(lambda b: b + b"\0" * (-len(b) % 4)))
def test_option_parsing_agrees_with_a_reference_reading(opts: bytes) -> None:
    hdr = bytes([0x40 | (5 + len(opts) // 4)]) + bytes(19) + opts
    got = check_options(hdr, len(hdr))
    expected = {None: None, "route": Drop.SOURCE_ROUTE, "bad": Drop.BAD_OPTIONS}[reference(opts)]
    assert got is expected
    r = make_router()
    out = r.handle("lan0", with_options(opts), 0.0)
    assert bool(out) == (expected is None)
    assert r.counters()["bad_ip_options"] == (expected is Drop.BAD_OPTIONS)
    assert r.counters().get("internal_error", 0) == 0


def test_tcp_flags_and_icmp_direct_from_wan_under_plain_routing_still_validated() -> None:
    r = make_router("nat option inbound-routing plain\n")
    assert r.handle("lan1", tcp(SRV, PC1, 5555, 22, "SF"), 0.0) == []
    assert r.handle("lan1", raw(IP(src=SRV, dst=PC1) / ICMP(type=8) / b"x"), 0.0)
    assert counters(r)["tcp_invalid_flags"] == 1


def test_check_options_ignores_what_lies_past_the_header() -> None:
    assert check_options(bytes(20) + bytes([131, 3, 4]) + bytes(1), 20) is None
    assert check_options(bytes(20) + bytes([1, 1, 1, 131]) + bytes([3, 4, 0, 0]), 24) is Drop.BAD_OPTIONS

