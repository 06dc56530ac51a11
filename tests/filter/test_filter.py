"""The filter as a whole (R16): order and positions, default, counters, logging, status, fast path.

Issue 4's acceptance: rule order and positions (top/above/below) behave as
configured; counters per rule are right.  Plus: verdicts of established flows
are decided once and kept on the fast path, and recomputed on reconfigure.
"""
from __future__ import annotations

import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.all import IP, Raw, raw  # type: ignore[attr-defined]

import passnat
from passnat.filter import format_status
from passnat.nat.flow import H_FC, H_SLOW
from passnat.nat.table import flow_key
from passnat.packet.ipv4 import aton, set_header_checksum
from tests.nat.helpers import (
    BASE,
    PC1,
    PC2,
    SRV,
    WAN_ADDR,
    counters,
    make_router,
    one,
    ping,
    tcp,
    udp,
)


def blocked(r: passnat.Router, iface: str, packet: bytes, now: float = 0.0) -> bool:
    return r.handle(iface, packet, now) == []


def counts(r: passnat.Router) -> dict[str, int]:
    return {rule["name"]: rule["count"] for rule in r.filter_status(0.0)["rules"]}


# ------------------------------------------------------------------ order and positions


@pytest.mark.parametrize("config, passes", [
    # first match wins, in configured order
    (("filter add a interface lan0 direction in action pass protocol udp\n"
     "filter add b interface lan0 direction in action block\n"), True),
    (("filter add b interface lan0 direction in action block\n"
     "filter add a interface lan0 direction in action pass protocol udp\n"), False),
    # top puts a later rule first
    (("filter add b interface lan0 direction in action block\n"
     "filter add a interface lan0 direction in action pass protocol udp top\n"), True),
    # above / below a named rule
    (("filter add b interface lan0 direction in action block\n"
     "filter add a interface lan0 direction in action pass protocol udp above b\n"), True),
    (("filter add b interface lan0 direction in action block\n"
     "filter add a interface lan0 direction in action pass protocol udp below b\n"), False),
    (("filter add x interface lan0 direction in action pass protocol tcp\n"
     "filter add b interface lan0 direction in action block\n"
     "filter add a interface lan0 direction in action pass protocol udp below x\n"), True),
    # bottom is the default place
    (("filter add b interface lan0 direction in action block\n"
     "filter add a interface lan0 direction in action pass protocol udp bottom\n"), False),
    # a disabled rule is skipped
    (("filter add b interface lan0 direction in action block disable\n"
     "filter add a interface lan0 direction in action pass protocol udp\n"), True),
    # no match: default pass, or filter default block
    ("filter add t interface lan0 direction in action block protocol tcp\n", True),
    ("filter add t interface lan0 direction in action block protocol tcp\nfilter default block\n", False),
    ("filter default block\n", False),
    ("filter default pass\n", True),
])
def test_first_match_in_configured_order(config: str, passes: bool) -> None:
    r = make_router(config)
    assert blocked(r, "lan0", udp(PC1, SRV, 5000, 53)) is not passes


def test_positions_show_in_status_in_evaluation_order() -> None:
    r = make_router("filter add a interface any direction in action pass\n"
                    "filter add b interface any direction in action pass\n"
                    "filter add c interface any direction in action pass top\n"
                    "filter add d interface any direction in action pass above a\n"
                    "filter add e interface any direction in action pass below a\n")
    rules = r.filter_status(0.0)["rules"]
    assert [x["name"] for x in rules] == ["c", "d", "a", "e", "b"]
    assert [x["position"] for x in rules] == [1, 2, 3, 4, 5]


# ------------------------------------------------------------------ counters


SEIL_LIKE = ("filter add dns interface lan0 direction in action pass protocol udp dstport 53\n"
             "filter add web interface lan1 direction out action pass protocol tcp dstport 80\n"
             "filter add ssh interface lan1 direction in action block protocol tcp dstport 22\n"
             "filter add in_block interface lan1 direction in action block logging on\n")


def test_counters_per_rule_are_right() -> None:
    r = make_router(SEIL_LIKE)
    for i in range(5):                                       # 5 DNS queries: in on lan0
        one(r.handle("lan0", udp(PC1, SRV, 5000 + i, 53), 0.0))
    for _ in range(3):                                       # a web connection: SYN + 2 segments out on lan1
        r.handle("lan0", tcp(PC1, SRV, 4000, 80, "S"), 0.0)
    r.handle("lan0", tcp(PC1, SRV, 4000, 80, "A"), 0.0)
    for _ in range(4):                                       # 4 SYNs to port 22 from outside
        assert blocked(r, "lan1", tcp(SRV, WAN_ADDR, 4444, 22, "S"))
    for _ in range(2):                                       # 2 unsolicited UDP
        assert blocked(r, "lan1", udp(SRV, WAN_ADDR, 9, 9))
    assert blocked(r, "lan1", udp(SRV, WAN_ADDR, 53, 5000))  # DNS answers are blocked inbound too
    assert counts(r) == {"dns": 5, "web": 4, "ssh": 4, "in_block": 3}
    assert counters(r)["filter_block"] == 7


def test_fast_path_packets_are_counted_on_their_rules() -> None:
    r = make_router("filter add out interface lan1 direction out action pass protocol udp\n"
                    "filter add back interface lan1 direction in action pass protocol udp srcport 6000\n"
                    "filter add lan interface any direction in/out action pass protocol udp\n")
    one(r.handle("lan0", udp(PC1, SRV, 5000, 6000), 0.0))
    okey = flow_key(aton(PC1), aton(SRV), 5000, 6000)
    ikey = flow_key(aton(SRV), aton(WAN_ADDR), 6000, 5000)
    oflow, iflow = r.table.out_flows[17][okey].o_hop, r.table.in_flows[17][ikey].i_hop
    assert not oflow[H_SLOW] and oflow[H_FC] is not None     # verdicts decided: fast path
    assert iflow[H_SLOW]                                     # until the first reply (Session.ur)
    for t in range(10):
        one(r.handle("lan0", udp(PC1, SRV, 5000, 6000), 1.0 + t))
        one(r.handle("lan1", udp(SRV, WAN_ADDR, 6000, 5000), 1.0 + t))
        iflow = r.table.in_flows[17][ikey].i_hop
        assert not iflow[H_SLOW] and iflow[H_FC] is not None  # replied: fast path, counted on its rules
    # out: 11 packets decided out on lan1 by "out", in on lan0 by "lan";
    # back: 10 packets in on lan1 by "back", out on lan0 by "lan"
    assert counts(r) == {"out": 11, "back": 10, "lan": 21}


def test_a_blocked_direction_takes_the_slow_path_and_is_counted_per_packet() -> None:
    r = make_router("filter add only53 interface lan1 direction in action block protocol udp srcport 6000\n")
    one(r.handle("lan0", udp(PC1, SRV, 5000, 6000), 0.0))
    ikey = flow_key(aton(SRV), aton(WAN_ADDR), 6000, 5000)
    assert r.table.in_flows[17][ikey].i_hop[H_SLOW]
    for t in range(7):
        assert blocked(r, "lan1", udp(SRV, WAN_ADDR, 6000, 5000), 1.0 + t)
    assert counts(r) == {"only53": 7}
    one(r.handle("lan0", udp(PC1, SRV, 5000, 6000), 9.0))    # the other direction still flows


def test_default_block_counts_what_no_rule_matched() -> None:
    r = make_router("filter add lan interface lan0 direction in action pass\nfilter default block\n")
    assert blocked(r, "lan0", udp(PC1, SRV, 5000, 53))        # passes lan0 in, blocked out on lan1
    st = r.filter_status(0.0)
    assert st["default"] == {"action": "block", "blocked": 1}
    assert st["rules"][0]["count"] == 1


def test_no_rules_no_cost() -> None:
    r = make_router()
    assert not r.filter.active
    one(r.handle("lan0", udp(PC1, SRV, 5000, 6000), 0.0))
    okey = flow_key(aton(PC1), aton(SRV), 5000, 6000)
    assert r.table.out_flows[17][okey].o_hop[H_FC] is None
    assert r.filter_status(0.0) == {"default": {"action": "pass", "blocked": 0}, "rules": [], "states": [],
                                    "counters": {"states": 0, "states_created": 0, "states_expired": 0,
                                                 "state_table_full": 0}}


# ------------------------------------------------------------------ reconfigure


def test_reconfigure_recomputes_verdicts_of_established_flows() -> None:
    r = make_router()
    one(r.handle("lan0", udp(PC1, SRV, 5000, 6000), 0.0))
    one(r.handle("lan1", udp(SRV, WAN_ADDR, 6000, 5000), 0.0))
    block = BASE + "filter add cut interface lan1 direction in action block protocol udp\n"
    r.reconfigure(passnat.parse_config(block))
    assert blocked(r, "lan1", udp(SRV, WAN_ADDR, 6000, 5000), 1.0)    # the fast path no longer passes it
    one(r.handle("lan0", udp(PC1, SRV, 5000, 6000), 1.0))             # the other direction still does
    assert counts(r) == {"cut": 1}
    r.reconfigure(passnat.parse_config(BASE))
    one(r.handle("lan1", udp(SRV, WAN_ADDR, 6000, 5000), 2.0))        # and back
    ikey = flow_key(aton(SRV), aton(WAN_ADDR), 6000, 5000)
    assert not r.table.in_flows[17][ikey].i_hop[H_SLOW]


def test_reconfigure_keeps_counters_of_unchanged_rules() -> None:
    text = "filter add keep interface lan0 direction in action pass protocol udp\n"
    r = make_router(text + "filter add change interface lan0 direction in action pass protocol tcp\n")
    one(r.handle("lan0", udp(PC1, SRV, 5000, 6000), 0.0))
    one(r.handle("lan0", tcp(PC1, SRV, 4000, 80, "S"), 0.0))
    r.reconfigure(passnat.parse_config(BASE + text + "filter add change interface lan0 direction in "
                                       "action pass protocol tcp dstport 80\n"))
    assert counts(r) == {"keep": 1, "change": 0}


# ------------------------------------------------------------------ logging


def test_logging_on_logs_blocked_packets_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    r = make_router(SEIL_LIKE)
    with caplog.at_level(logging.INFO, logger="passnat"):
        for _ in range(5):
            r.handle("lan1", tcp(SRV, WAN_ADDR, 4444, 23, "S"), 10.0)
        r.handle("lan1", tcp(SRV, WAN_ADDR, 4444, 23, "S"), 11.5)
        r.handle("lan1", tcp(SRV, WAN_ADDR, 4444, 22, "S"), 12.0)     # ssh: logging off
    lines = [rec.getMessage() for rec in caplog.records if "filter" in rec.getMessage()]
    assert len(lines) == 2
    assert lines[0] == "filter in_block: block in on lan1 tcp 198.51.100.7:4444 > 203.0.113.1:23"
    assert counts(r)["in_block"] == 6 and counts(r)["ssh"] == 1


def test_logging_state_only_logs_states(caplog: pytest.LogCaptureFixture) -> None:
    r = make_router("filter add out interface lan1 direction out action pass state enable logging state-only\n")
    with caplog.at_level(logging.INFO, logger="passnat"):
        one(r.handle("lan0", udp(PC1, SRV, 5000, 6000), 0.0))
    msgs = [rec.getMessage() for rec in caplog.records]
    assert any("state 1 made for udp 192.168.0.11:5000 > 198.51.100.7:6000 out on lan1" in m for m in msgs)


# ------------------------------------------------------------------ status


def test_status_records_and_seil_lines() -> None:
    r = make_router("filter add web interface lan1 direction out action pass protocol tcp dstport 80 state enable\n"
                    "filter add dhcp interface any direction in action block protocol udp src 192.168.3.0/24 "
                    "dstport 66-68 logging on\n"
                    "filter add both interface lan0 direction in/out action pass protocol icmp icmp-type 8\n")
    r.handle("lan0", tcp(PC1, SRV, 65523, 80, "S"), 0.0)
    st = r.filter_status(100.0)
    web = st["rules"][0]
    assert web == {"position": 1, "name": "web", "pages": ["prenat"], "interface": "lan1", "direction": "out",
                   "action": "pass", "protocol": "tcp", "icmp_type": None, "src": "any", "srcport": None,
                   "dst": "any", "dstport": "80", "ipopts": None, "state": True, "state_ttl": "normal",
                   "logging": "off", "label": None, "enabled": True, "count": 1}
    (state,) = st["states"]
    assert state["rule"] == "web" and state["protocol"] == "tcp" and state["src"] == PC1
    assert (state["srcport"], state["dst"], state["dstport"]) == (65523, SRV, 80)
    assert state["origins"] == [{"interface": "lan1", "direction": "out"}]
    assert (state["ttl"], state["timer"]) == (800, 900)        # nat timeout 900 for "normal"
    lines = format_status(st)
    assert lines == [
        "page prenat id web pass out on lan1 proto tcp from any to any port 80 count 1",
        "page postnat id dhcp block in log on any proto udp from 192.168.3.0/24 to any port 66-68 count 0",
        "page prenat id both pass out on lan0 proto icmp icmp-type 8 from any to any count 0",
        "page postnat id both pass in on lan0 proto icmp icmp-type 8 from any to any count 0",
        ("page dynamic ttl 800/900 id web-00000001 pass out on lan1 proto tcp from 192.168.0.11 port 65523 "
         "to 198.51.100.7 port 80 count 0"),                   # the SYN was the rule's decision
        "default pass blocked 0",
    ]


# ------------------------------------------------------------------ robustness


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=0, max_size=80), st.sampled_from(["lan0", "lan1"]))
def test_no_packet_makes_the_filter_raise(data: bytes, iface: str) -> None:
    r = _FUZZ_ROUTER
    header = bytes.fromhex("4500") + (20 + len(data)).to_bytes(2, "big") + bytes.fromhex("00010000 4011 0000")
    header += bytes([192, 168, 0, 11] if iface == "lan0" else [198, 51, 100, 7])
    header += bytes([198, 51, 100, 7] if iface == "lan0" else [203, 0, 113, 1])
    for proto in (1, 6, 17, 47, 50):
        b = bytearray(header + data)
        b[9] = proto
        set_header_checksum(b)
        r.handle(iface, bytes(b), 0.0)


_FUZZ_ROUTER = make_router(
    "filter add a interface any direction in/out action pass protocol tcp-synonly state enable\n"
    "filter add b interface any direction in action block protocol icmp icmp-type 3\n"
    "filter add c interface any direction in/out action pass ipopts 148 state enable\n"
    "filter add d interface lan1 direction in action block\n")


def test_two_hosts_same_rule_each_their_own_verdict() -> None:
    r = make_router("filter add pc1 interface lan0 direction in action block src 192.168.0.11\n")
    assert blocked(r, "lan0", ping(PC1, SRV, 1))
    one(r.handle("lan0", ping(PC2, SRV, 1), 0.0))


def test_slow_path_flows_scan_the_rules_once() -> None:
    """ESP has no fast path: its packets reuse the rules' verdict instead of scanning 500 rules each."""
    many = "".join(f"filter add r{i} interface lan1 direction in action block protocol udp dstport {i + 1}\n"
                   for i in range(500))
    r = make_router(many + "filter add esp interface lan1 direction in action pass protocol esp\n")
    esp_out = raw(IP(src=PC1, dst=SRV, proto=50) / Raw(b"\0\0\x10\x01\0\0\0\1" + b"e" * 20))
    esp_in = raw(IP(src=SRV, dst=WAN_ADDR, proto=50) / Raw(b"\0\0\x20\x02\0\0\0\1" + b"e" * 20))
    one(r.handle("lan0", esp_out, 0.0))
    for t in range(100):
        one(r.handle("lan1", esp_in, 1.0 + t), "lan0")
    assert counts(r)["esp"] == 100
    assert len(r.filter._verdicts) <= 4
