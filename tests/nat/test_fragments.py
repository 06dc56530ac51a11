"""Fragment translation and requeueing (R21, R22), with a fake clock.

Issue 4's acceptance: a datagram in 3 fragments, delivered in all 6 orders,
in both directions, for UDP, ESP and GRE (and TCP, ICMP and PPTP's enhanced
GRE): with requeueing on every fragment leaves translated, offset 0 first;
with it off only the fragments after offset 0 pass and the others are
counted.  Then the flood bounds (257th held fragment dropped, expiry at 5 s,
memory bounded), overlaps, duplicates, the filter's verdict on fragments,
and fragments that never touch NAT.
"""
from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from itertools import permutations

import pytest
from scapy.all import GRE, ICMP, IP, TCP, UDP, Raw, raw  # type: ignore[attr-defined]
from scapy.layers.l2 import GRE_PPTP

import passnat
from passnat.nat import fragments as fragmod
from passnat.packet.ipv4 import set_header_checksum
from tests.filter.vpn_helpers import Call, pptp_call
from tests.nat.fragment_helpers import check_fragment, offsets, reassemble, split
from tests.nat.helpers import (
    BASE,
    PC1,
    PC2,
    SRV,
    WAN_ADDR,
    counters,
    make_router,
    one,
    tcp,
    udp,
    verify,
)

PAYLOAD = bytes(range(256)) * 9 + b"end"  # 2307 bytes: three fragments of 1000 bytes
SIZE = 1000
ORDERS = list(permutations(range(3)))
OUT_ID, IN_ID = 0x4242, 0x4343


def esp_body(spi: int, seq: int = 1) -> bytes:
    return struct.pack("!II", spi, seq) + PAYLOAD


def call_from_pc1(r: passnat.Router) -> Call:
    """A PPTP call PC1 (Call ID 0x1234) -> SRV (Call ID 0x0777)."""
    return pptp_call(r, pns=("lan0", PC1), pac=("lan1", SRV), pns_addr_seen=WAN_ADDR, pac_addr_seen=SRV)


@dataclass
class Case:
    """A protocol's datagram in one direction: set the session up, the datagram, what must leave."""

    setup: Callable[[passnat.Router], object]
    packet: Callable[[], bytes]
    expected: Callable[[passnat.Router], bytes]
    iface: str
    oif: str


def _none(r: passnat.Router) -> None:
    return None


def _cases() -> dict[tuple[str, str], Case]:
    c: dict[tuple[str, str], Case] = {}
    # UDP (e.g. a fragmented IKE_AUTH on 4500)
    c[("udp", "out")] = Case(
        _none, lambda: raw(IP(src=PC1, dst=SRV, id=OUT_ID) / UDP(sport=4500, dport=4500) / PAYLOAD),
        lambda r: raw(IP(src=WAN_ADDR, dst=SRV, id=OUT_ID, ttl=63) / UDP(sport=4500, dport=4500) / PAYLOAD),
        "lan0", "lan1")
    c[("udp", "in")] = Case(
        lambda r: one(r.handle("lan0", udp(PC1, SRV, 4500, 4500), 0.0)),
        lambda: raw(IP(src=SRV, dst=WAN_ADDR, id=IN_ID) / UDP(sport=4500, dport=4500) / PAYLOAD),
        lambda r: raw(IP(src=SRV, dst=PC1, id=IN_ID, ttl=63) / UDP(sport=4500, dport=4500) / PAYLOAD),
        "lan1", "lan0")
    # ESP (raw ESP passthrough)
    c[("esp", "out")] = Case(
        _none, lambda: raw(IP(src=PC1, dst=SRV, id=OUT_ID, proto=50) / Raw(esp_body(0x1001))),
        lambda r: raw(IP(src=WAN_ADDR, dst=SRV, id=OUT_ID, proto=50, ttl=63) / Raw(esp_body(0x1001))),
        "lan0", "lan1")
    c[("esp", "in")] = Case(
        lambda r: one(r.handle("lan0", raw(IP(src=PC1, dst=SRV, proto=50) / Raw(esp_body(0x1001)[:64])), 0.0)),
        lambda: raw(IP(src=SRV, dst=WAN_ADDR, id=IN_ID, proto=50) / Raw(esp_body(0x2002))),
        lambda r: raw(IP(src=SRV, dst=PC1, id=IN_ID, proto=50, ttl=63) / Raw(esp_body(0x2002))),
        "lan1", "lan0")
    # GRE version 0 (address-only sessions)
    c[("gre", "out")] = Case(
        _none, lambda: raw(IP(src=PC1, dst=SRV, id=OUT_ID) / GRE(proto=0x0800) / PAYLOAD),
        lambda r: raw(IP(src=WAN_ADDR, dst=SRV, id=OUT_ID, ttl=63) / GRE(proto=0x0800) / PAYLOAD),
        "lan0", "lan1")
    c[("gre", "in")] = Case(
        lambda r: one(r.handle("lan0", raw(IP(src=PC1, dst=SRV) / GRE(proto=0x0800) / b"x"), 0.0)),
        lambda: raw(IP(src=SRV, dst=WAN_ADDR, id=IN_ID) / GRE(proto=0x0800) / PAYLOAD),
        lambda r: raw(IP(src=SRV, dst=PC1, id=IN_ID, ttl=63) / GRE(proto=0x0800) / PAYLOAD),
        "lan1", "lan0")
    # TCP (a mid-stream segment outbound; inbound after a handshake)
    c[("tcp", "out")] = Case(
        _none, lambda: raw(IP(src=PC1, dst=SRV, id=OUT_ID) / TCP(sport=4000, dport=80, flags="A") / PAYLOAD),
        lambda r: raw(IP(src=WAN_ADDR, dst=SRV, id=OUT_ID, ttl=63) / TCP(sport=4000, dport=80, flags="A") / PAYLOAD),
        "lan0", "lan1")
    c[("tcp", "in")] = Case(
        lambda r: (one(r.handle("lan0", tcp(PC1, SRV, 4000, 80, "S"), 0.0)),
                   one(r.handle("lan1", tcp(SRV, WAN_ADDR, 80, 4000, "SA"), 0.0))),
        lambda: raw(IP(src=SRV, dst=WAN_ADDR, id=IN_ID) / TCP(sport=80, dport=4000, flags="A") / PAYLOAD),
        lambda r: raw(IP(src=SRV, dst=PC1, id=IN_ID, ttl=63) / TCP(sport=80, dport=4000, flags="A") / PAYLOAD),
        "lan1", "lan0")
    # ICMP echo (the id is translated in the first fragment only)
    c[("icmp", "out")] = Case(
        _none, lambda: raw(IP(src=PC1, dst=SRV, id=OUT_ID) / ICMP(type=8, id=77, seq=1) / PAYLOAD),
        lambda r: raw(IP(src=WAN_ADDR, dst=SRV, id=OUT_ID, ttl=63) / ICMP(type=8, id=77, seq=1) / PAYLOAD),
        "lan0", "lan1")
    c[("icmp", "in")] = Case(
        lambda r: one(r.handle("lan0", raw(IP(src=PC1, dst=SRV) / ICMP(type=8, id=77, seq=1)), 0.0)),
        lambda: raw(IP(src=SRV, dst=WAN_ADDR, id=IN_ID) / ICMP(type=0, id=77, seq=1) / PAYLOAD),
        lambda r: raw(IP(src=SRV, dst=PC1, id=IN_ID, ttl=63) / ICMP(type=0, id=77, seq=1) / PAYLOAD),
        "lan1", "lan0")
    # PPTP enhanced GRE: the Call ID is in the first fragment
    c[("pptp-gre", "out")] = Case(
        call_from_pc1, lambda: raw(IP(src=PC1, dst=SRV, id=OUT_ID) / GRE_PPTP(call_id=0x0777, seqnum_present=1)
                               / PAYLOAD),
        lambda r: raw(IP(src=WAN_ADDR, dst=SRV, id=OUT_ID, ttl=63) / GRE_PPTP(call_id=0x0777, seqnum_present=1)
                      / PAYLOAD),
        "lan0", "lan1")
    c[("pptp-gre", "in")] = Case(
        call_from_pc1, lambda: raw(IP(src=SRV, dst=WAN_ADDR, id=IN_ID) / GRE_PPTP(call_id=0, seqnum_present=1)
                               / PAYLOAD),
        lambda r: raw(IP(src=SRV, dst=PC1, id=IN_ID, ttl=63) / GRE_PPTP(call_id=0x1234, seqnum_present=1)
                      / PAYLOAD),
        "lan1", "lan0")
    return c


CASES = _cases()


def _prepare(proto: str, direction: str, extra: str = "") -> tuple[passnat.Router, Case, list[bytes]]:
    r = make_router(extra)
    case = CASES[(proto, direction)]
    made = case.setup(r)
    packet = case.packet()
    if proto == "pptp-gre" and direction == "in":  # the server sends to our outside Call ID
        assert isinstance(made, Call)
        p = IP(packet)
        p[GRE_PPTP].call_id = made.pns_id
        packet = raw(p)
    frags = split(packet, SIZE)
    assert len(frags) == 3
    return r, case, frags


def assert_translated(datagram: bytes, expected: bytes) -> None:
    got = verify(datagram)
    exp = IP(expected)
    assert (got.src, got.dst, got.proto, got.id, got.ttl) == (exp.src, exp.dst, exp.proto, exp.id, exp.ttl)
    assert datagram[got.ihl * 4:] == raw(exp)[exp.ihl * 4:], "transport header or payload differs"


@pytest.mark.parametrize("order", ORDERS, ids=lambda o: "".join(map(str, o)))
@pytest.mark.parametrize("direction", ["out", "in"])
@pytest.mark.parametrize("proto", ["udp", "esp", "gre", "tcp", "icmp", "pptp-gre"])
def test_requeueing_on_translates_every_order(proto: str, direction: str, order: tuple[int, ...]) -> None:
    r, case, frags = _prepare(proto, direction)
    outs = []
    for i in order:
        outs.extend(r.handle(case.iface, frags[i], 1.0))
    assert len(outs) == 3 and all(o.interface == case.oif for o in outs)
    assert offsets(outs)[0] == 0, "the first fragment must leave first"
    assert_translated(reassemble([o.packet for o in outs]), case.expected(r))
    early = order.index(0)
    c = counters(r)
    assert c.get("fragments_held", 0) == early and c.get("fragments_requeued", 0) == early
    assert r.fragments.stats()["held"] == 0


@pytest.mark.parametrize("order", ORDERS, ids=lambda o: "".join(map(str, o)))
@pytest.mark.parametrize("direction", ["out", "in"])
@pytest.mark.parametrize("proto", ["udp", "esp", "gre"])
def test_requeueing_off_passes_only_what_follows_the_first(proto: str, direction: str,
                                                          order: tuple[int, ...]) -> None:
    r, case, frags = _prepare(proto, direction, "option ip fragment-requeueing off\n")
    outs = []
    for i in order:
        outs.extend(r.handle(case.iface, frags[i], 1.0))
    early = order.index(0)
    assert len(outs) == 3 - early
    assert counters(r).get("fragment_out_of_order", 0) == early
    assert offsets(outs)[0] == 0
    if early == 0:
        assert_translated(reassemble([o.packet for o in outs]), case.expected(r))
    else:
        for o in outs:  # what passes is still translated
            assert IP(o.packet).dst == IP(case.expected(r)).dst and IP(o.packet).src == IP(case.expected(r)).src
    assert r.fragments.stats()["held"] == 0


def test_fragments_of_two_hosts_with_the_same_ip_id_stay_apart() -> None:
    r = make_router()
    a = split(raw(IP(src=PC1, dst=SRV, id=7) / UDP(sport=5000, dport=53) / PAYLOAD), SIZE)
    b = split(raw(IP(src=PC2, dst=SRV, id=7) / UDP(sport=5000, dport=53) / PAYLOAD), SIZE)
    assert r.handle("lan0", a[2], 0.0) == [] and r.handle("lan0", b[1], 0.0) == []
    outs_b = r.handle("lan0", b[0], 0.0)                  # releases b's held fragment only
    assert offsets(outs_b) == [0, 1000]
    outs_a = r.handle("lan0", a[0], 0.0)
    assert offsets(outs_a) == [0, 2000]
    outs_a += r.handle("lan0", a[1], 0.0)
    outs_b += r.handle("lan0", b[2], 0.0)
    pa, pb = (verify(reassemble([o.packet for o in outs])) for outs in (outs_a, outs_b))
    assert pa[UDP].sport != pb[UDP].sport                 # two inside hosts, two outside ports
    assert {s["inside"] for s in r.sessions(0.0)} == {PC1, PC2}


# ------------------------------------------------------------------ bounds


def _lone_fragments(n: int, src: str = SRV, dst: str = WAN_ADDR) -> list[bytes]:
    """``n`` non-first fragments of ``n`` different datagrams (IP ids 1..n) that never complete."""
    template = bytearray(split(raw(IP(src=src, dst=dst, id=1) / UDP(sport=4500, dport=4500) / PAYLOAD), SIZE)[1])
    out = []
    for i in range(n):
        struct.pack_into("!H", template, 4, (i + 1) & 0xFFFF)
        set_header_checksum(template)
        out.append(bytes(template))
    return out


def test_hold_limit_256_drops_the_257th_and_held_fragments_expire_at_5s() -> None:
    r = make_router()
    one(r.handle("lan0", udp(PC1, SRV, 4500, 4500), 0.0))
    lone = _lone_fragments(300)
    for f in lone[:256]:
        assert r.handle("lan1", f, 0.0) == []
    assert counters(r).get("fragment_hold_full", 0) == 0
    assert r.fragments.stats()["held"] == 256
    assert r.handle("lan1", lone[256], 0.0) == []
    assert counters(r)["fragment_hold_full"] == 1          # the 257th
    for f in lone[257:]:
        r.handle("lan1", f, 0.0)
    assert counters(r)["fragment_hold_full"] == 44
    assert r.fragments.stats()["held"] == 256
    assert r.next_deadline() == pytest.approx(5.0)
    r.on_timer(4.99)
    assert r.fragments.stats()["held"] == 256
    r.on_timer(5.0)
    assert r.fragments.stats() ["held"] == 0
    assert counters(r)["fragment_hold_expired"] == 256
    # room again: a new out-of-order fragment is held
    assert r.handle("lan1", _lone_fragments(1)[0], 5.5) == []
    assert r.fragments.stats()["held"] == 1


def test_each_held_fragment_has_its_own_5s() -> None:
    r = make_router()
    one(r.handle("lan0", udp(PC1, SRV, 4500, 4500), 0.0))
    frags = split(raw(IP(src=SRV, dst=WAN_ADDR, id=9) / UDP(sport=4500, dport=4500) / PAYLOAD), SIZE)
    r.handle("lan1", frags[2], 0.0)
    r.handle("lan1", frags[1], 3.0)
    r.on_timer(5.0)
    assert r.fragments.stats()["held"] == 1                # the one held at 3.0 waits until 8.0
    outs = r.handle("lan1", frags[0], 6.0)
    assert offsets(outs) == [0, 1000]
    assert counters(r)["fragment_hold_expired"] == 1


def test_expiry_needs_no_timer_call() -> None:
    """Held fragments expire on time even when the caller's timer is late (lazy expiry)."""
    r = make_router("option ip fragment-requeueing-limit 2\n")
    one(r.handle("lan0", udp(PC1, SRV, 4500, 4500), 0.0))
    lone = _lone_fragments(4)
    r.handle("lan1", lone[0], 0.0)
    r.handle("lan1", lone[1], 0.0)
    r.handle("lan1", lone[2], 1.0)
    assert counters(r)["fragment_hold_full"] == 1
    r.handle("lan1", lone[3], 5.0)                          # the two from 0.0 are gone: room
    assert counters(r)["fragment_hold_expired"] == 2
    assert r.fragments.stats()["held"] == 1


def test_limit_and_timeout_are_configurable() -> None:
    r = make_router("option ip fragment-requeueing-limit 10\noption ip fragment-requeueing-timeout 2\n")
    one(r.handle("lan0", udp(PC1, SRV, 4500, 4500), 0.0))
    for f in _lone_fragments(12):
        r.handle("lan1", f, 0.0)
    assert r.fragments.stats()["held"] == 10 and counters(r)["fragment_hold_full"] == 2
    r.on_timer(1.99)
    assert r.fragments.stats()["held"] == 10
    r.on_timer(2.0)
    assert r.fragments.stats()["held"] == 0


def test_reconfigure_changes_requeueing() -> None:
    r = make_router()
    one(r.handle("lan0", udp(PC1, SRV, 4500, 4500), 0.0))
    r.reconfigure(passnat.parse_config(BASE + "option ip fragment-requeueing off\n"))
    assert r.handle("lan1", _lone_fragments(1)[0], 0.0) == []
    assert counters(r)["fragment_out_of_order"] == 1


def test_flood_is_bounded_and_never_disturbs_unfragmented_traffic(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fragmod, "RECORD_MAX", 50)
    r = make_router()
    one(r.handle("lan0", udp(PC1, SRV, 4500, 4500), 0.0))
    lone = _lone_fragments(10000)
    for i, f in enumerate(lone):
        now = i * 0.002  # 10,000 lone fragments in 20 s: expiry and the limit both at work
        r.handle("lan1", f, now)
        if i % 500 == 0:  # unfragmented traffic in both directions still flows
            one(r.handle("lan0", udp(PC1, SRV, 4500, 4500, b"keepalive"), now), "lan1")
            one(r.handle("lan1", udp(SRV, WAN_ADDR, 4500, 4500, b"reply"), now), "lan0")
        st = r.fragments.stats()
        assert st["held"] <= 256 and st["queue"] <= 2 * (256 + 256) + 64
    # first fragments (records) are bounded too
    first = bytearray(split(raw(IP(src=PC1, dst=SRV, id=1) / UDP(sport=4500, dport=4500) / PAYLOAD), SIZE)[0])
    for i in range(200):
        struct.pack_into("!H", first, 4, i + 1)
        set_header_checksum(first)
        one(r.handle("lan0", bytes(first), 20.0))
    assert r.fragments.stats()["records"] <= 50
    r.on_timer(60.0)
    assert r.fragments.stats() == {"held": 0, "held_datagrams": 0, "records": 0, "queue": 0, "dropped": 0}


# ------------------------------------------------------------------ overlap, duplicates


def test_overlapping_fragment_is_dropped_and_counted() -> None:
    r = make_router()
    frags = split(raw(IP(src=PC1, dst=SRV, id=5) / UDP(sport=4500, dport=4500) / PAYLOAD), SIZE)
    outs = r.handle("lan0", frags[0], 0.0)
    evil = IP(frags[1])
    evil.frag = (SIZE - 8) // 8  # starts 8 bytes into the first fragment's data
    evil.chksum = None
    assert r.handle("lan0", raw(evil), 0.0) == []
    assert counters(r)["fragment_overlap"] == 1
    outs += r.handle("lan0", frags[1], 0.0) + r.handle("lan0", frags[2], 0.0)
    assert len(outs) == 3
    reassemble([o.packet for o in outs])


def test_overlap_among_held_fragments_is_dropped() -> None:
    r = make_router()
    frags = split(raw(IP(src=PC1, dst=SRV, id=5) / UDP(sport=4500, dport=4500) / PAYLOAD), SIZE)
    r.handle("lan0", frags[1], 0.0)
    evil = IP(frags[2])
    evil.frag = (2 * SIZE - 16) // 8
    evil.chksum = None
    assert r.handle("lan0", raw(evil), 0.0) == []
    assert counters(r)["fragment_overlap"] == 1
    assert r.fragments.stats()["held"] == 1


def test_exact_duplicate_is_forwarded() -> None:
    r = make_router()
    frags = split(raw(IP(src=PC1, dst=SRV, id=5) / UDP(sport=4500, dport=4500) / PAYLOAD), SIZE)
    outs = r.handle("lan0", frags[0], 0.0) + r.handle("lan0", frags[1], 0.0) + r.handle("lan0", frags[1], 0.0)
    assert len(outs) == 3 and counters(r).get("fragment_overlap", 0) == 0


# ------------------------------------------------------------------ without NAT


ROUTED = BASE + "interface lan2 add 192.168.1.1/24\n"
LAN2_HOST = "192.168.1.20"


def test_fragments_that_never_touch_nat_are_routed_as_they_come() -> None:
    r = make_router(base=ROUTED)
    frags = split(raw(IP(src=PC1, dst=LAN2_HOST, id=3) / UDP(sport=1, dport=2) / PAYLOAD), SIZE)
    outs = r.handle("lan0", frags[2], 0.0)
    assert len(outs) == 1 and outs[0].interface == "lan2" and IP(outs[0].packet).src == PC1
    outs += r.handle("lan0", frags[0], 0.0) + r.handle("lan0", frags[1], 0.0)
    assert_translated(reassemble([o.packet for o in outs]),
                      raw(IP(src=PC1, dst=LAN2_HOST, id=3, ttl=63) / UDP(sport=1, dport=2) / PAYLOAD))


def test_with_a_filter_routed_fragments_wait_for_their_first_fragment() -> None:
    r = make_router("filter add no_dns interface any direction in action block protocol udp dstport 53\n",
                    base=ROUTED)
    ok = split(raw(IP(src=PC1, dst=LAN2_HOST, id=3) / UDP(sport=1, dport=2) / PAYLOAD), SIZE)
    assert r.handle("lan0", ok[2], 0.0) == []
    outs = r.handle("lan0", ok[0], 0.0)
    assert offsets(outs) == [0, 2000]
    bad = split(raw(IP(src=PC1, dst=LAN2_HOST, id=4) / UDP(sport=1, dport=53) / PAYLOAD), SIZE)
    assert r.handle("lan0", bad[1], 0.0) == []
    assert r.handle("lan0", bad[0], 0.0) == []            # blocked: the held fragment goes with it
    assert r.handle("lan0", bad[2], 0.0) == []            # and so do later ones
    assert counters(r)["filter_block"] == 3
    assert r.filter_status(0.0)["rules"][0]["count"] == 3
    assert r.fragments.stats()["held"] == 0


# ------------------------------------------------------------------ filter verdicts follow the first fragment


def test_fragments_are_counted_on_the_rule_that_passed_their_first_fragment() -> None:
    r = make_router("filter add ike interface lan1 direction out action pass protocol udp dstport 4500\n")
    frags = split(raw(IP(src=PC1, dst=SRV, id=5) / UDP(sport=4500, dport=4500) / PAYLOAD), SIZE)
    outs = []
    for i in (1, 2, 0):
        outs += r.handle("lan0", frags[i], 0.0)
    assert len(outs) == 3
    assert r.filter_status(0.0)["rules"][0]["count"] == 3


def test_filter_block_of_a_first_fragment_blocks_the_whole_datagram_inbound() -> None:
    r = make_router("filter add nat_t interface lan1 direction in action block protocol udp dstport 4500\n")
    one(r.handle("lan0", udp(PC1, SRV, 4500, 4500), 0.0))
    frags = split(raw(IP(src=SRV, dst=WAN_ADDR, id=5) / UDP(sport=4500, dport=4500) / PAYLOAD), SIZE)
    outs = []
    for i in (2, 0, 1):
        outs += r.handle("lan1", frags[i], 0.0)
    assert outs == []
    assert counters(r)["filter_block"] == 3
    assert r.filter_status(0.0)["rules"][0]["count"] == 3


def test_first_fragment_split_again_by_a_smaller_mtu() -> None:
    r = make_router("interface lan1 mtu 576\n")
    frags = split(raw(IP(src=PC1, dst=SRV, id=5) / UDP(sport=4500, dport=4500) / PAYLOAD), SIZE)
    outs = []
    for i in (2, 0, 1):
        outs += r.handle("lan0", frags[i], 0.0)
    assert all(len(o.packet) <= 576 for o in outs)
    assert offsets(outs)[0] == 0 and len(outs) > 3
    assert_translated(reassemble([o.packet for o in outs]),
                      raw(IP(src=WAN_ADDR, dst=SRV, id=5, ttl=63) / UDP(sport=4500, dport=4500) / PAYLOAD))


def test_later_fragment_with_ttl_1_is_dropped_without_icmp() -> None:
    r = make_router()
    frags = split(raw(IP(src=PC1, dst=SRV, id=5, ttl=1) / UDP(sport=4500, dport=4500) / PAYLOAD), SIZE)
    outs = r.handle("lan0", frags[1], 0.0)
    assert outs == []
    outs = r.handle("lan0", frags[0], 0.0)               # time exceeded for the first fragment only
    assert len(outs) == 1 and IP(outs[0].packet)[ICMP].type == 11
    assert counters(r)["ttl_exceeded"] >= 1


@pytest.mark.parametrize("garbage", [
    b"\x45\x00\x00\x1c\x00\x01\x00\x7f\x40\x11\x00\x00\xc0\xa8\x00\x0b\xc6\x33\x64\x07" + b"\0" * 8,
    b"\x45\x00\x00\x15\x00\x01\x20\x01\x40\x11\x00\x00\xc0\xa8\x00\x0b\xc6\x33\x64\x07" + b"\0",
])
def test_odd_fragments_never_raise(garbage: bytes) -> None:
    p = bytearray(garbage)
    set_header_checksum(p)
    r = make_router()
    r.handle("lan0", bytes(p), 0.0)
    r.handle("lan1", bytes(p), 0.0)
    check_fragment(bytes(p))
