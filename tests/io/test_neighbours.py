"""ARP neighbour table: answering, resolving, queueing, failing, ageing (fake clock)."""
from __future__ import annotations

import ipaddress

from scapy.layers.l2 import ARP, Ether

from passnat.io.ether import (
    ARP_REPLY,
    ARP_REQUEST,
    BROADCAST,
    Arp,
    build_arp_frame,
    gratuitous_arp,
    mac_bytes,
    parse_arp,
)
from passnat.io.neighbours import ArpTimers, NeighbourTable

MAC = mac_bytes("02:00:00:00:00:01")
HOST_MAC = mac_bytes("02:00:00:00:00:0b")
ROUTER = "192.168.0.1"
HOST = "192.168.0.11"
GLOBAL = "203.0.113.1"


def ip(text: str) -> int:
    return int(ipaddress.IPv4Address(text))


def table(**timers: float) -> NeighbourTable:
    t = NeighbourTable("lan0", MAC, ArpTimers(**timers))  # type: ignore[arg-type]
    t.set_addresses([ipaddress.IPv4Interface("192.168.0.1/24")], {ROUTER})
    return t


def reply_from(host: str, mac: bytes, to: str = ROUTER) -> Arp:
    return Arp(ARP_REPLY, mac, ip(host), MAC, ip(to))


def test_request_for_own_address_is_answered_and_sender_learned() -> None:
    t = table()
    out = t.on_arp(Arp(ARP_REQUEST, HOST_MAC, ip(HOST), b"\0" * 6, ip(ROUTER)), now=1.0)
    assert len(out) == 1
    e = Ether(out[0])
    assert e.dst == "02:00:00:00:00:0b" and e.src == "02:00:00:00:00:01"
    assert e[ARP].op == 2 and e[ARP].psrc == ROUTER and e[ARP].pdst == HOST and e[ARP].hwsrc == e.src
    assert t.fast[HOST][:6] == HOST_MAC  # learned: RFC 826 "I am the target"
    assert t.counters["arp_replies_sent"] == 1


def test_request_for_other_address_is_ignored() -> None:
    t = table()
    assert t.on_arp(Arp(ARP_REQUEST, HOST_MAC, ip(HOST), b"\0" * 6, ip("192.168.0.99")), now=1.0) == []
    assert HOST not in t.fast


def test_nat_global_address_is_answered() -> None:
    t = NeighbourTable("lan1", MAC)
    t.set_addresses([ipaddress.IPv4Interface("203.0.113.1/24")], {GLOBAL, "203.0.113.5"})
    out = t.on_arp(Arp(ARP_REQUEST, HOST_MAC, ip("203.0.113.10"), b"\0" * 6, ip("203.0.113.5")), now=0.0)
    assert Ether(out[-1])[ARP].psrc == "203.0.113.5"


def test_resolution_queues_then_releases_in_order() -> None:
    t = table()
    frames = t.output(HOST, b"packet-1", None, now=0.0)
    assert len(frames) == 1
    req = Ether(frames[0])
    assert req.dst == "ff:ff:ff:ff:ff:ff" and req[ARP].op == 1 and req[ARP].pdst == HOST
    assert req[ARP].psrc == ROUTER
    assert t.output(HOST, b"packet-2", None, now=0.1) == []  # waits, no second request
    released = t.on_arp(reply_from(HOST, HOST_MAC), now=0.2)
    assert [f[14:] for f in released] == [b"packet-1", b"packet-2"]
    assert all(f[:6] == HOST_MAC and f[6:12] == MAC and f[12:14] == b"\x08\x00" for f in released)
    assert t.fast[HOST] == HOST_MAC + MAC + b"\x08\x00"
    assert t.queued == 0


def test_queue_is_bounded_per_neighbour_and_in_total() -> None:
    t = table(queue_per_neighbour=3, queue_total=5)
    for i in range(5):
        t.output(HOST, bytes([i]), None, now=0.0)
    assert t.counters["arp_queue_full"] == 2  # oldest dropped
    for i in range(4):
        t.output("192.168.0.12", bytes([i]), None, now=0.0)
    assert t.queued == 5
    assert t.counters["arp_queue_full"] == 4
    released = t.on_arp(reply_from(HOST, HOST_MAC), now=0.5)
    assert [f[14:] for f in released] == [b"\x02", b"\x03", b"\x04"]


def test_failure_after_retries_reports_queued_packets() -> None:
    t = table(interval=1.0, retries=3)
    t.output(HOST, b"p1", ("lan1", b"orig1"), now=0.0)
    t.output(HOST, b"p2", ("lan1", b"orig2"), now=0.2)
    assert t.next_deadline() == 1.0
    assert len(t.on_timer(1.0)) == 1  # second request
    assert len(t.on_timer(2.0)) == 1  # third request
    assert t.failed == []
    assert t.on_timer(3.0) == []  # no answer to 3 requests: failed
    assert t.failed == [(b"p1", ("lan1", b"orig1")), (b"p2", ("lan1", b"orig2"))]
    assert t.counters["arp_resolution_failed"] == 1 and t.counters["arp_unresolved"] == 2
    t.failed.clear()
    # during the hold-down, packets fail at once; afterwards a new resolution starts
    assert t.output(HOST, b"p3", None, now=3.5) == []
    assert t.failed == [(b"p3", None)]
    t.on_timer(4.0)
    assert len(t.output(HOST, b"p4", None, now=4.1)) == 1


def test_entries_age_to_stale_then_probe_then_go() -> None:
    t = table(reachable_time=30.0, gc_time=300.0, interval=1.0, retries=2)
    t.on_arp(reply_from(HOST, HOST_MAC), now=0.0)  # unsolicited reply for us: learned
    assert HOST in t.fast
    t.on_timer(30.0)
    assert HOST not in t.fast and t.entries[ip(HOST)].state == "stale"
    out = t.output(HOST, b"data", None, now=40.0)  # used: sent with the old MAC and probed (unicast)
    assert out[0] == HOST_MAC + MAC + b"\x08\x00" + b"data"
    probe = Ether(out[1])
    assert probe.dst == "02:00:00:00:00:0b" and probe[ARP].op == 1
    assert HOST in t.fast
    t.on_timer(41.0)
    t.on_timer(42.0)
    assert HOST not in t.fast and t.entries[ip(HOST)].state == "failed"


def test_probe_answered_stays_reachable() -> None:
    t = table(reachable_time=30.0)
    t.on_arp(reply_from(HOST, HOST_MAC), now=0.0)
    t.on_timer(30.0)
    t.output(HOST, b"x", None, now=31.0)
    t.on_arp(reply_from(HOST, HOST_MAC), now=31.5)
    assert t.entries[ip(HOST)].state == "reachable"
    assert t.next_deadline() == 61.5


def test_unused_stale_entry_is_forgotten() -> None:
    t = table(reachable_time=30.0, gc_time=300.0)
    t.on_arp(reply_from(HOST, HOST_MAC), now=0.0)
    t.on_timer(30.0)
    assert t.next_deadline() == 300.0
    t.on_timer(300.0)
    assert ip(HOST) not in t.entries


def test_broadcast_next_hops_are_permanent() -> None:
    t = table()
    assert t.fast["192.168.0.255"][:6] == BROADCAST
    assert t.fast["255.255.255.255"][:6] == BROADCAST
    assert all(r["state"] != "permanent" for r in t.records(0.0))


def test_conflicting_claim_of_own_address_is_counted_not_learned() -> None:
    t = table()
    assert t.on_arp(Arp(ARP_REQUEST, HOST_MAC, ip(ROUTER), b"\0" * 6, ip(ROUTER)), now=0.0) == []
    assert t.counters["arp_conflict"] == 1
    assert ROUTER not in t.fast


def test_mac_change_is_followed() -> None:
    t = table()
    t.on_arp(reply_from(HOST, HOST_MAC), now=0.0)
    other = mac_bytes("02:00:00:00:00:0c")
    t.on_arp(Arp(ARP_REQUEST, other, ip(HOST), b"\0" * 6, ip("192.168.0.50")), now=1.0)  # gratuitous-ish
    assert t.fast[HOST][:6] == other


def test_records_and_announcements() -> None:
    t = table()
    t.output(HOST, b"x", None, now=0.0)
    t.on_arp(reply_from("192.168.0.12", HOST_MAC), now=1.0)
    recs = t.records(2.0)
    assert {r["address"]: r["state"] for r in recs} == {HOST: "incomplete", "192.168.0.12": "reachable"}
    assert recs[0]["queued"] == 1 and recs[0]["mac"] is None
    garp = Ether(t.announcements()[0])
    assert garp.dst == "ff:ff:ff:ff:ff:ff" and garp[ARP].psrc == garp[ARP].pdst == ROUTER


def test_wire_format_round_trip() -> None:
    frame = build_arp_frame(op=ARP_REQUEST, src_mac=MAC, sender_ip=ip(ROUTER), target_mac=b"\0" * 6,
                            target_ip=ip(HOST))
    assert len(frame) == 60
    parsed = parse_arp(frame[14:])
    assert parsed == Arp(ARP_REQUEST, MAC, ip(ROUTER), b"\0" * 6, ip(HOST))
    assert parse_arp(b"\x00\x01\x08\x00\x06\x04\x00\x09" + b"\0" * 20) is None  # bad op
    assert parse_arp(b"short") is None
    assert parse_arp(bytes(Ether() / ARP(hwtype=6))[14:]) is None  # not Ethernet
    assert Ether(gratuitous_arp(MAC, ip(ROUTER)))[ARP].hwsrc == "02:00:00:00:00:01"
