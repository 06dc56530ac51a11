"""Filter states (``state enable``, R16): replies pass through a later block rule, on their own timer.

Issue 4's acceptance: ``state enable`` lets replies in through a block rule.
States belong to the flow (private-side key), so the replies of TCP, UDP,
ICMP echo, ESP and GRE flows pass; the state's own timer (``state-ttl``)
ends it, and the fast path follows.
"""
from __future__ import annotations

import struct

import pytest
from scapy.all import GRE, ICMP, IP, TCP, Raw, raw  # type: ignore[attr-defined]

import passnat
from passnat.filter.state import StateTable
from passnat.nat.flow import H_SLOW
from passnat.nat.table import flow_key
from passnat.packet.ipv4 import aton
from tests.nat.helpers import (
    BASE,
    GW,
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

STATEFUL = ("filter add out interface lan1 direction out action pass state enable\n"
            "filter add in_block interface lan1 direction in action block\n")


def blocked(r: passnat.Router, iface: str, packet: bytes, now: float = 0.0) -> bool:
    return r.handle(iface, packet, now) == []


def esp(src: str, dst: str, spi: int, seq: int = 1) -> bytes:
    return raw(IP(src=src, dst=dst, proto=50) / Raw(struct.pack("!II", spi, seq) + b"e" * 32))


def gre(src: str, dst: str) -> bytes:
    return raw(IP(src=src, dst=dst) / GRE(proto=0x0800) / b"inner")


# (name, outbound packet from PC1, the server's reply to the WAN address, expected inside destination)
FLOWS = [
    ("tcp", tcp(PC1, SRV, 4000, 443, "S"), tcp(SRV, WAN_ADDR, 443, 4000, "SA")),
    ("udp", udp(PC1, SRV, 5000, 6000), udp(SRV, WAN_ADDR, 6000, 5000)),
    ("icmp", ping(PC1, SRV, 77), ping(SRV, WAN_ADDR, 77, reply=True)),
    ("esp", esp(PC1, SRV, 0x1001), esp(SRV, WAN_ADDR, 0x2002)),
    ("gre", gre(PC1, SRV), gre(SRV, WAN_ADDR)),
]


@pytest.mark.parametrize("name, out, reply", FLOWS, ids=[f[0] for f in FLOWS])
def test_state_lets_replies_in_through_a_block_rule(name: str, out: bytes, reply: bytes) -> None:
    r = make_router(STATEFUL)
    one(r.handle("lan0", out, 0.0), "lan1")
    back = one(r.handle("lan1", reply, 0.1), "lan0")
    assert back.dst == PC1
    st = r.filter_status(0.2)
    assert st["counters"]["states_created"] == 1 and st["states"][0]["count"] == 2   # in on lan1, out on lan0
    assert st["rules"][1]["count"] == 0


@pytest.mark.parametrize("name, out, reply", FLOWS, ids=[f[0] for f in FLOWS])
def test_without_state_the_replies_are_blocked(name: str, out: bytes, reply: bytes) -> None:
    r = make_router(STATEFUL.replace("state enable", "state disable"))
    one(r.handle("lan0", out, 0.0), "lan1")
    assert blocked(r, "lan1", reply, 0.1)
    assert r.filter_status(0.2)["rules"][1]["count"] == 1


def test_a_state_covers_its_flow_only() -> None:
    r = make_router(STATEFUL)
    one(r.handle("lan0", udp(PC1, SRV, 5000, 6000), 0.0))
    one(r.handle("lan0", udp(PC2, SRV, 5000, 7000), 0.0))
    assert blocked(r, "lan1", udp(SRV, WAN_ADDR, 6001, 5000), 0.1)     # another remote port
    assert blocked(r, "lan1", udp("198.51.100.8", WAN_ADDR, 6000, 5000), 0.1)  # another remote (NAT drop)
    one(r.handle("lan1", udp(SRV, WAN_ADDR, 6000, 5000), 0.1), "lan0")


def test_tcp_connection_through_a_stateful_filter_uses_the_fast_path() -> None:
    r = make_router(STATEFUL)
    one(r.handle("lan0", tcp(PC1, SRV, 4000, 443, "S"), 0.0))
    one(r.handle("lan1", tcp(SRV, WAN_ADDR, 443, 4000, "SA"), 0.0))
    one(r.handle("lan0", tcp(PC1, SRV, 4000, 443, "A"), 0.0))
    okey = flow_key(aton(PC1), aton(SRV), 4000, 443)
    ikey = flow_key(aton(SRV), aton(WAN_ADDR), 443, 4000)
    assert not r.table.out_flows[6][okey].o_hop[H_SLOW] and not r.table.in_flows[6][ikey].i_hop[H_SLOW]
    for t in range(20):
        one(r.handle("lan1", tcp(SRV, WAN_ADDR, 443, 4000, "A", payload=b"data"), 1.0 + t), "lan0")
        one(r.handle("lan0", tcp(PC1, SRV, 4000, 443, "A"), 1.0 + t), "lan1")
    st = r.filter_status(30.0)
    # SYN decided by the rule; then per packet: out on lan1 (1 decision), replies in lan1 + out lan0 (2)
    assert st["rules"][0]["count"] == 1
    assert st["states"][0]["count"] == 21 + 2 * 21


def test_state_ttl_ends_the_state_and_the_fast_path_follows() -> None:
    r = make_router(STATEFUL.replace("state enable", "state enable state-ttl 30"))
    one(r.handle("lan0", udp(PC1, SRV, 5000, 6000), 0.0))
    one(r.handle("lan1", udp(SRV, WAN_ADDR, 6000, 5000), 10.0), "lan0")   # refreshes: 10 + 30
    assert r.filter_status(10.0)["states"][0]["ttl"] == 30
    assert r.next_deadline() == pytest.approx(30.0)  # the session's entry of its unreplied timer (filed again)
    r.on_timer(30.0)
    assert r.next_deadline() == pytest.approx(40.0)
    r.on_timer(39.9)
    one(r.handle("lan1", udp(SRV, WAN_ADDR, 6000, 5000), 39.9), "lan0")   # fast path; refreshes the session
    r.on_timer(69.8)
    assert len(r.filter_status(69.8)["states"]) == 1                       # 39.9 + 30 not reached
    r.on_timer(69.9)
    assert r.filter_status(69.9)["states"] == []
    assert r.filter_status(69.9)["counters"]["states_expired"] == 1
    assert blocked(r, "lan1", udp(SRV, WAN_ADDR, 6000, 5000), 70.0)       # the NAT session (900 s) lives on
    assert len(r.sessions(70.0)) == 1
    # the next outbound packet makes a new state; replies pass again
    one(r.handle("lan0", udp(PC1, SRV, 5000, 6000), 71.0))
    one(r.handle("lan1", udp(SRV, WAN_ADDR, 6000, 5000), 71.0), "lan0")
    assert r.filter_status(71.0)["counters"]["states_created"] == 2


def test_expired_state_is_noticed_even_without_a_timer_call_on_the_slow_path() -> None:
    r = make_router(STATEFUL.replace("state enable", "state enable state-ttl 5"))
    one(r.handle("lan0", esp(PC1, SRV, 0x1001), 0.0))
    one(r.handle("lan1", esp(SRV, WAN_ADDR, 0x2002), 1.0), "lan0")
    assert blocked(r, "lan1", esp(SRV, WAN_ADDR, 0x2002, 2), 6.5)        # ESP always takes the slow path


@pytest.mark.parametrize("config, klass_timer", [
    ("", 900),                                   # nat timeout (default 900)
    ("nat timeout 300\n", 300),
    ("nat timeout protocol udp 120\n", 120),     # the protocol's NAT timer
])
def test_normal_state_ttl_is_the_nat_timer_of_the_protocol(config: str, klass_timer: int) -> None:
    r = make_router(config + STATEFUL)
    one(r.handle("lan0", udp(PC1, SRV, 5000, 6000), 0.0))
    assert r.filter_status(0.0)["states"][0]["timer"] == klass_timer


def test_dns_state_is_short_like_seil() -> None:
    r = make_router(STATEFUL)
    one(r.handle("lan0", udp(PC1, SRV, 5000, 53), 0.0))
    assert r.filter_status(0.0)["states"][0]["timer"] == 15


def test_tcp_rst_shortens_the_state() -> None:
    r = make_router(STATEFUL)
    one(r.handle("lan0", tcp(PC1, SRV, 4000, 443, "S"), 0.0))
    one(r.handle("lan1", tcp(SRV, WAN_ADDR, 443, 4000, "SA"), 0.0))
    one(r.handle("lan1", tcp(SRV, WAN_ADDR, 443, 4000, "R"), 1.0))
    assert r.filter_status(1.0)["states"][0]["timer"] == 10
    r.on_timer(11.0)
    assert r.filter_status(11.0)["states"] == []


def test_tcp_fin_both_ways_shortens_the_state() -> None:
    r = make_router(STATEFUL)
    one(r.handle("lan0", tcp(PC1, SRV, 4000, 443, "S"), 0.0))
    one(r.handle("lan1", tcp(SRV, WAN_ADDR, 443, 4000, "SA"), 0.0))
    one(r.handle("lan0", tcp(PC1, SRV, 4000, 443, "FA"), 1.0))
    assert r.filter_status(1.0)["states"][0]["timer"] == 900
    one(r.handle("lan1", tcp(SRV, WAN_ADDR, 443, 4000, "FA"), 2.0))
    assert r.filter_status(2.0)["states"][0]["timer"] == 10


def test_state_made_by_an_inbound_rule_lets_the_inside_servers_replies_out() -> None:
    r = make_router("nat snapt add protocol tcp listen 443 forward 192.168.0.10 443 interface lan1\n"
                    "filter add https interface lan1 direction in action pass protocol tcp dstport 443 state enable\n"
                    "filter add out_block interface lan1 direction out action block\n")
    one(r.handle("lan1", tcp(SRV, WAN_ADDR, 5555, 443, "S"), 0.0), "lan0")
    back = one(r.handle("lan0", tcp("192.168.0.10", SRV, 443, 5555, "SA"), 0.0), "lan1")
    assert back.src == WAN_ADDR
    for t in range(3):
        one(r.handle("lan0", tcp("192.168.0.10", SRV, 443, 5555, "A", payload=b"x"), 1.0 + t), "lan1")
    assert blocked(r, "lan0", tcp("192.168.0.10", SRV, 444, 5555, "S"), 5.0)   # anything else: blocked


def test_state_does_not_open_other_filter_points_for_its_own_direction() -> None:
    """A state made in on lan0 passes replies everywhere, not the flow's own packets out on lan1."""
    r = make_router("filter add no_ssh interface lan1 direction out action block protocol tcp dstport 22\n"
                    "filter add lan interface lan0 direction in action pass state enable\n")
    assert blocked(r, "lan0", tcp(PC1, SRV, 4000, 22, "S"))
    assert r.filter_status(0.0)["rules"][0]["count"] == 1


def test_stateful_rule_on_every_interface() -> None:
    r = make_router("filter add every interface any direction in/out action pass protocol udp state enable\n"
                    "filter default block\n")
    one(r.handle("lan0", udp(PC1, SRV, 5000, 6000), 0.0))
    (state,) = r.filter_status(0.0)["states"]
    assert state["origins"] == [{"interface": "lan0", "direction": "in"}, {"interface": "lan1", "direction": "out"}]
    for t in range(3):
        one(r.handle("lan1", udp(SRV, WAN_ADDR, 6000, 5000), 1.0 + t), "lan0")
        one(r.handle("lan0", udp(PC1, SRV, 5000, 6000), 1.0 + t), "lan1")
    assert blocked(r, "lan1", tcp(SRV, WAN_ADDR, 6001, 5000, "S"), 5.0)
    assert r.filter_status(5.0)["default"]["blocked"] == 1


def test_icmp_errors_about_a_stateful_flow_pass() -> None:
    """Path MTU discovery through a stateful filter (SEIL: accept-icmperr)."""
    r = make_router(STATEFUL)
    syn = tcp(PC1, SRV, 4000, 443, "S")
    sent = one(r.handle("lan0", syn, 0.0))
    quote = raw(sent)[:28]
    err = raw(IP(src=GW, dst=WAN_ADDR) / ICMP(type=3, code=4, nexthopmtu=1400) / quote)
    back = one(r.handle("lan1", err, 0.1), "lan0")
    assert back.dst == PC1 and back[ICMP].nexthopmtu == 1400
    other = raw(IP(src=WAN_ADDR, dst="198.51.100.99") / TCP(sport=4000, dport=443, flags="S"))[:28]
    assert blocked(r, "lan1", raw(IP(src=GW, dst=WAN_ADDR) / ICMP(type=3, code=4) / other), 0.2)


def test_states_survive_reconfigure_and_clear_states_drops_them() -> None:
    r = make_router(STATEFUL)
    one(r.handle("lan0", udp(PC1, SRV, 5000, 6000), 0.0))
    r.reconfigure(passnat.parse_config(BASE + "filter add in_block interface lan1 direction in action block\n"))
    one(r.handle("lan1", udp(SRV, WAN_ADDR, 6000, 5000), 1.0), "lan0")   # the state still passes replies
    assert r.filter.clear_states() == 1
    assert blocked(r, "lan1", udp(SRV, WAN_ADDR, 6000, 5000), 2.0)        # re-decided at once: blocked


def test_full_state_table_passes_without_state_and_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    r = make_router(STATEFUL)
    r.filter.states.maximum = 2
    for port in (5000, 5001, 5002):
        one(r.handle("lan0", udp(PC1, SRV, port, 6000), 0.0))
    assert counters(r)["filter_state_table_full"] == 1
    assert r.filter_status(0.0)["counters"]["state_table_full"] == 1
    one(r.handle("lan1", udp(SRV, WAN_ADDR, 6000, 5001), 0.0))
    assert blocked(r, "lan1", udp(SRV, WAN_ADDR, 6000, 5002), 0.0)


def test_state_table_unit() -> None:
    t = StateTable(maximum=10)
    key = (17, 1, 2, 3, 4)
    st = t.add(key, rule="r", origin=("lan0", True), ttl=10.0, fixed=True, klass="udp", now=0.0)
    assert st is not None
    assert t.get(key) is st and t.get((17, 3, 4, 1, 2)) is st and t.get((17, 3, 4, 1, 3)) is None
    assert t.next_deadline() == 10.0
    st.last = 5.0
    assert t.expire(10.0) == [] and t.next_deadline() == 15.0
    assert t.get(key, 14.9) is st
    assert t.get(key, 15.0) is None and len(t) == 0 and t.expired_total == 1


def test_state_expiry_is_noticed_by_handle_alone() -> None:
    """No on_timer call: the router wakes for the state's deadline, and the fast path follows."""
    r = make_router(STATEFUL.replace("state enable", "state enable state-ttl 10"))
    one(r.handle("lan0", udp(PC1, SRV, 5000, 6000), 0.0))
    one(r.handle("lan1", udp(SRV, WAN_ADDR, 6000, 5000), 5.0), "lan0")     # fast path, refreshes
    one(r.handle("lan1", udp(SRV, WAN_ADDR, 6000, 5000), 14.0), "lan0")    # 5 + 10 not reached
    assert blocked(r, "lan1", udp(SRV, WAN_ADDR, 6000, 5000), 24.5)        # 14 + 10 passed
