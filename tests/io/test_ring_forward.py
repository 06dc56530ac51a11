"""The C ring path (passnat._speedups.ring_forward) against the Python loop alone.

Two daemons on fake links (tests/io/fakes.py: TPACKET_V2 rings in memory, send
sockets on socketpairs) get the same frames at the same clock, one with the C
receive loop (passnat._speedups.ring_rx) and one without (what PASSNAT_PURE=1
gives).  Everything they
send (per link, in order, virtio_net_hdr included), every counter, every
session with its last-seen time, the filter's counters and the ARP tables
must come out identical.  The scenarios mix established and new flows in both
directions, partial checksums, what the fast path refuses (TTL 1, fragments,
IP options, SYN/FIN/RST, the MTU, ALG ports), unresolved next hops and ARP,
super-frames, truncated and corrupt frames, send failures and timers that
come due between blocks.

Then the C function alone: bad arguments are refused before any slot is
touched, unusable egress entries and hostile ring contents leave frames to
Python without crashing, and a long run leaks neither references nor memory.
"""
from __future__ import annotations

import array
import functools
import gc
import select
import signal
import socket
import struct
import sys
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.all import IP, TCP, UDP, Ether, raw  # type: ignore[attr-defined]
from scapy.layers.inet import IPOption_EOL, IPOption_NOP
from scapy.layers.l2 import ARP

from passnat import speedups
from passnat.io.afpacket import TP_STATUS_CSUMNOTREADY
from passnat.io.daemon import Daemon
from passnat.io.link import FAST_STATE_LEN, ST_FAST, ST_HEAD, ST_RX_PACKETS, ST_TX_BYTES, ST_TX_PACKETS
from passnat.io.offload import GSO_TCPV4, GSO_UDP_L4
from passnat.io.reactor import Reactor
from passnat.nat.actions import Output
from tests.io.fakes import (
    CONFIG,
    MACS,
    PC_MAC,
    SRV_MAC,
    FakeRing,
    FakeTx,
    arp_frame,
    learn,
    make_daemon,
    partial,
)
from tests.nat.helpers import verify

PC, PC2, SRV, SRV2, WAN = "192.168.0.11", "192.168.0.12", "203.0.113.10", "203.0.113.20", "203.0.113.1"
PC2_MAC, SRV2_MAC = "02:00:00:00:00:0c", "02:00:00:00:01:14"
HOST_MAC = {PC: PC_MAC, PC2: PC2_MAC, SRV: SRV_MAC, SRV2: SRV2_MAC}

#: filter rules that count on the fast path (H_FC): one counter, and two combined (lan0 in + lan1 out)
CONFIG_F = CONFIG + """\
filter add udp_in interface lan0 direction in action pass protocol udp
filter add all_out interface lan1 direction out action pass
"""

#: (protocol, inside host, inside port, remote host, remote port); ports are kept by NAPT (auto)
FLOWS = [
    (17, PC, 40001, SRV, 53),
    (6, PC, 40002, SRV, 80),
    (17, PC, 40003, SRV2, 9999),  # SRV2's MAC is unknown until it answers ARP
    (6, PC2, 40004, SRV, 443),  # PC2's MAC too: replies wait for ARP on lan0
    (17, PC, 500, SRV, 500),  # IKE: an ALG session, slow path by design
]

VARIANTS = [""] * 12 + ["mf", "options", "pad", "long_total", "short_total", "zero_csum", "gso",
            "truncated", "bad_vnet", "oversize", "cut"]
FIELDS = ["snap", "len", "mac", "net", "status"]
FIELD_VALUES = [0, 1, 9, 10, 20, 32, 42, 56, 60, 66, 76, 90, 106, 120, 200, 1514, 1972, 2047, 5000, 0xFFFF, 70000]


BUILT = speedups.built()
RX = BUILT.ring_rx if BUILT is not None else None


@pytest.fixture(autouse=True)
def c_path_built() -> Iterator[None]:
    if RX is None:
        pytest.fail("passnat._speedups is not built (ring_rx missing)")
    yield
    for tx in FakeTx.opened:
        tx.close()
    FakeTx.opened.clear()


# ---------------------------------------------------------------- scenarios


@dataclass(frozen=True)
class Spec:
    """One frame: a packet of a flow (``out`` from the LAN, ``in`` from the WAN) or ARP."""

    kind: str
    flow: int = 0
    flags: str = "A"
    ttl: int = 64
    size: int = 18
    partial: bool = False
    variant: str = ""


@functools.cache
def build(spec: Spec) -> tuple[bytes, int, bytes, int | None]:
    """(frame, status, vnet header, wire length) as FakeRing.put takes them."""
    if spec.kind == "arp_srv2":
        return arp_frame(2, SRV2_MAC, SRV2, WAN, dst=MACS["lan1"]), 0, b"", None
    if spec.kind == "arp_pc2":
        return arp_frame(2, PC2_MAC, PC2, "192.168.0.1", dst=MACS["lan0"]), 0, b"", None
    proto, host, hport, remote, rport = FLOWS[spec.flow]
    if spec.kind == "out":
        src, dst, sport, dport, link = host, remote, hport, rport, "lan0"
    else:
        src, dst, sport, dport, link = remote, WAN, rport, hport, "lan1"
    options = [IPOption_NOP(), IPOption_NOP(), IPOption_NOP(), IPOption_EOL()] if spec.variant == "options" else []
    size = 1480 if spec.variant == "oversize" else spec.size
    ip = IP(src=src, dst=dst, ttl=spec.ttl, flags="MF" if spec.variant == "mf" else 0, options=options)
    l4 = TCP(sport=sport, dport=dport, flags=spec.flags, seq=1000, ack=1) if proto == 6 else UDP(sport=sport, dport=dport)
    pkt = bytearray(raw(ip / l4 / bytes(i & 0xFF for i in range(size))))
    ihl = (pkt[0] & 15) * 4
    if spec.variant == "zero_csum" and proto == 17:
        pkt[ihl + 6:ihl + 8] = b"\0\0"
    status, vnet, wirelen = 0, b"", None
    if spec.partial or spec.variant in ("gso", "bad_vnet"):
        part, vnet = partial(bytes(pkt))
        pkt, status = bytearray(part), TP_STATUS_CSUMNOTREADY
        if spec.variant == "gso":
            vnet = vnet[:1] + bytes([GSO_TCPV4 if proto == 6 else GSO_UDP_L4]) + vnet[2:4] + struct.pack("<H", 500) \
                + vnet[6:]
        if spec.variant == "bad_vnet":
            vnet = vnet[:6] + struct.pack("<H", 3) + vnet[8:]  # csum_start inside the Ethernet header
    if spec.variant == "long_total":
        pkt[2:4] = struct.pack("!H", len(pkt) + 10)
    if spec.variant == "short_total":
        pkt[2:4] = struct.pack("!H", len(pkt) - 4)
    frame = raw(Ether(src=HOST_MAC[src], dst=MACS[link]) / IP(bytes(pkt)))
    if spec.variant == "pad":
        frame += bytes(20)
    if spec.variant == "truncated":
        wirelen = len(frame) + 100  # captured whole, but the wire length says more
    if spec.variant == "cut":
        frame, wirelen = frame[:40], len(frame)
    return frame, status, vnet, wirelen


def specs(link: str) -> st.SearchStrategy[Spec]:
    arp = "arp_pc2" if link == "lan0" else "arp_srv2"
    kind = "out" if link == "lan0" else "in"
    packet = st.builds(Spec, st.just(kind), st.integers(0, len(FLOWS) - 1),
                       st.sampled_from(["A", "A", "A", "PA", "PA", "PA", "S", "SA", "FA", "R"]),
                       st.sampled_from([64, 64, 64, 64, 64, 2, 1]), st.sampled_from([0, 5, 18, 100, 1400, 1460]),
                       st.booleans(), st.sampled_from(VARIANTS))
    return st.integers(0, 9).flatmap(lambda i: st.just(Spec(arp)) if i == 0 else packet)


@st.composite
def blocks(draw: st.DrawFn) -> list[dict[str, Any]]:
    out = []
    for _ in range(draw(st.integers(1, 8))):
        link = draw(st.sampled_from(["lan0", "lan1"]))
        frames = draw(st.lists(specs(link), min_size=1, max_size=10))
        corrupt: dict[int, dict[str, int]] = {}
        mutate: list[tuple[int, int]] = []
        if draw(st.integers(0, 3)) == 0:
            for i, field, value in draw(st.lists(st.tuples(st.integers(0, len(frames) - 1), st.sampled_from(FIELDS),
                                                           st.sampled_from(FIELD_VALUES)), max_size=3)):
                corrupt.setdefault(i, {})[field] = value & (0xFFFF if field in ("mac", "net") else 0xFFFFFFFF)
        if draw(st.integers(0, 5)) == 0:
            mutate = draw(st.lists(st.tuples(st.integers(0, len(frames) - 1), st.integers(4, 2047),
                                             st.integers(0, 255)), max_size=6))
        out.append({"link": link, "frames": [build(s) for s in frames], "corrupt": corrupt, "mutate": mutate,
                    "dt": draw(st.sampled_from([0.0, 0.0, 0.0, 0.001, 0.001, 1.0, 5.0, 40.0, 400.0])),
                    "fail": draw(st.integers(0, 7)) == 0})
    return out


def establish() -> list[dict[str, Any]]:
    """Every flow opened from the LAN and answered (SRV2 and PC2 answer ARP on the way)."""
    out = [Spec("out", i, flags="S") for i in range(len(FLOWS))]
    back = [Spec("in", i, flags="SA") for i in range(len(FLOWS))]
    return [{"link": "lan0", "frames": [build(s) for s in out], "corrupt": {}, "mutate": [], "dt": 0.0, "fail": False},
            {"link": "lan1", "frames": [build(Spec("arp_srv2"))] + [build(s) for s in back], "corrupt": {},
             "mutate": [], "dt": 0.1, "fail": False},
            {"link": "lan0", "frames": [build(Spec("arp_pc2"))], "corrupt": {}, "mutate": [], "dt": 0.1,
             "fail": False}]


def run(scenario: list[dict[str, Any]], c_path: bool) -> tuple[dict[str, Any], dict[str, int]]:
    """Feed the scenario to a fresh daemon; (everything observable, frames the C path forwarded per link)."""
    with tempfile.TemporaryDirectory() as tmp:
        d, rings, txs, clock = make_daemon(Path(tmp), config=CONFIG_F)
        d.ring_rx = RX if c_path else None  # (C also with PASSNAT_PURE set)
        learn(d, rings)
        for blk in scenario:
            clock.now += blk["dt"]
            txs["lan1"].fail = blk["fail"]
            ring = rings[blk["link"]]
            offs = ring.put(blk["frames"], blk["corrupt"])
            for i, pos, value in blk["mutate"]:
                if i < len(offs):
                    ring.mm[offs[i] + pos] = value
            while d._drain(d.links[blk["link"]]):
                pass
            d._timers(clock.now)
        return snapshot(d, txs, clock.now)


def snapshot(d: Daemon, txs: dict[str, FakeTx], now: float) -> tuple[dict[str, Any], dict[str, int]]:
    links, fast = {}, {}
    for name, link in d.links.items():
        stats = link.stats()
        fast[name] = stats["counters"].pop("rx_fast_path")
        links[name] = stats
    for tx in txs.values():
        tx.frames  # noqa: B018 -- reads what arrived into tx.wire
    seen = {"wire": {n: list(tx.wire) for n, tx in txs.items()}, "links": links,
            "daemon": dict(d.counters), "engine": d.router.counters(), "sessions": d.router.sessions(now),
            "filter": d.router.filter_status(now),
            "arp": [r for link in d.links.values() if link.neigh for r in link.neigh.records(now)]}
    return seen, fast


def assert_same(scenario: list[dict[str, Any]]) -> dict[str, int]:
    c_seen, fast = run(scenario, True)
    py_seen, py_fast = run(scenario, False)
    assert set(py_fast.values()) == {0}
    for key in c_seen:
        assert c_seen[key] == py_seen[key], key
    return fast


# ---------------------------------------------------------------- C path == Python path


def test_established_flows_go_through_c_with_the_same_bytes_and_counters() -> None:
    traffic = []
    for i in range(10):
        traffic += [Spec("out", 0, size=i), Spec("in", 0, size=i), Spec("out", 1, flags="PA", size=100 + i),
                    Spec("in", 1, flags="A", partial=True), Spec("out", 1, flags="PA", size=1460, partial=True),
                    Spec("out", 0, size=18, variant="zero_csum"), Spec("out", 2), Spec("in", 3, flags="PA")]
    scenario = establish() + [
        {"link": "lan0", "frames": [build(s) for s in traffic if s.kind == "out"], "corrupt": {}, "mutate": [],
         "dt": 1.0, "fail": False},
        {"link": "lan1", "frames": [build(s) for s in traffic if s.kind == "in"], "corrupt": {}, "mutate": [],
         "dt": 0.5, "fail": False},
    ]
    fast = assert_same(scenario)
    # every established packet, nothing else (the two UDP replies of establish() are their sessions'
    # first replies: the slow path's, which ends the short unreplied timer)
    assert fast == {"lan0": 50, "lan1": 30}
    c_seen, _ = run(scenario, True)
    wire = c_seen["wire"]["lan1"]
    partial_out = [f for f in wire if f[0] == 1]  # virtio_net_hdr asking the kernel for the checksum
    assert len(partial_out) == 10 and all(f[6:10] == b"\x22\x00\x10\x00" for f in partial_out)
    for f in wire[-40:]:
        ip = verify((f[10:] if f[0] == 0 else _finish(f))[14:])  # every checksum (UDP 0 stays 0)
        assert ip.src == WAN and ip.ttl == 63


def _finish(frame: bytes) -> bytes:
    from passnat.io.offload import complete_partial, parse_vnet
    v = parse_vnet(frame, 0)
    return complete_partial(frame[10:], v.csum_start, v.csum_offset)


def test_the_block_order_is_kept_around_frames_left_to_python() -> None:
    """Fast, slow (TTL 1), fast, ARP, fast, slow (a SYN): out in exactly that order."""
    frames = [build(Spec("out", 0, size=1)), build(Spec("out", 1, flags="PA", ttl=1)), build(Spec("out", 0, size=2)),
              build(Spec("arp_pc2")), build(Spec("out", 1, flags="PA", size=3)), build(Spec("out", 1, flags="S"))]
    scenario = establish() + [{"link": "lan0", "frames": frames, "corrupt": {}, "mutate": [], "dt": 1.0,
                               "fail": False}]
    fast = assert_same(scenario)
    assert fast["lan0"] == 3
    c_seen, _ = run(scenario, True)
    last = [IP(f[24:]) for f in c_seen["wire"]["lan1"][-4:]]
    assert [(p.proto, len(p[UDP].payload) if p.proto == 17 else str(p[TCP].flags)) for p in last] == \
        [(17, 1), (17, 2), (6, "PA"), (6, "S")]


def test_send_failures_and_due_timers() -> None:
    """A failing egress socket is counted per frame; a block whose clock reached the engine's
    deadline goes through handle() (timers first), later ones through C again."""
    est = [build(Spec("out", 0)), build(Spec("out", 1, flags="PA"))]
    scenario = establish() + [
        {"link": "lan0", "frames": est, "corrupt": {}, "mutate": [], "dt": 1.0, "fail": True},
        {"link": "lan0", "frames": est, "corrupt": {}, "mutate": [], "dt": 1000.0, "fail": False},
        {"link": "lan0", "frames": est, "corrupt": {}, "mutate": [], "dt": 1.0, "fail": False},
    ]
    assert_same(scenario)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(blocks())
def test_random_traffic_same_through_both_paths(scenario: list[dict[str, Any]]) -> None:
    assert_same(establish() + scenario)


# ---------------------------------------------------------------- the C function alone


def _call_args(d: Daemon, fake: FakeRing, state: Any, slow: Any = None, head: int = 0, **over: Any) -> list[Any]:
    if len(state) > ST_HEAD:
        state[ST_HEAD] = head
    link = ("lan0", fake.mm, fake.frame_nr, fake.frame_size, 1514, state, slow or _Slow())
    link = tuple(over.pop(k) if k in over else v for k, v in zip(
        ("interface", "ring", "frame_nr", "frame_size", "plain", "state", "slow"), link))
    args = {"links": (link,), "budget": 256, "now": 1.0, "fast": True, "tables": d.router.fast_tables,
            "egress": d._egress, "partial_max": 1500, "spin_ns": 0, "lean": d.router.lean.c_state, "send": d._send,
            "error": d._lean_error, "output": Output}
    args.update(over)
    return list(args.values())


class _Slow:
    """A slow(offset) callback that records what it was given."""

    def __init__(self) -> None:
        self.offsets: list[int] = []

    def __call__(self, off: int, now: float) -> None:
        self.offsets.append(off)


def _state() -> array.array[int]:
    return array.array("q", bytes(8 * FAST_STATE_LEN))


def _established(tmp: Path) -> tuple[Daemon, dict[str, FakeRing], dict[str, FakeTx]]:
    d, rings, txs, clock = make_daemon(tmp)
    d.ring_rx = RX  # the C loop (also with PASSNAT_PURE set)
    learn(d, rings)
    for blk in establish()[:2]:
        clock.now += blk["dt"]
        rings[blk["link"]].put(blk["frames"])
        d._drain(d.links[blk["link"]])
    return d, rings, txs


def test_bad_arguments_are_refused_before_any_slot_is_touched(tmp_path: Path) -> None:
    d, rings, _ = _established(tmp_path)
    rx = RX
    assert rx is not None
    ring = FakeRing()
    ring.put([build(Spec("out", 0))])
    before = bytes(ring.mm)
    state = _state()
    with pytest.raises(TypeError):
        rx(*_call_args(d, ring, state)[:11])
    with pytest.raises(TypeError):
        rx(*_call_args(d, ring, state, lean=1))
    with pytest.raises(TypeError):
        rx(*_call_args(d, ring, state, send=None))
    with pytest.raises(TypeError):
        rx(*_call_args(d, ring, state, lean=(1, 2)))
    with pytest.raises(TypeError):
        rx(*_call_args(d, ring, state, tables=[]))
    with pytest.raises(TypeError):
        rx(*_call_args(d, ring, state, slow=1))
    with pytest.raises(TypeError):
        rx(*_call_args(d, ring, state, links=[]))
    with pytest.raises(BufferError):
        rx(*_call_args(d, ring, state, ring=b"read-only"))
    for bad in ({"frame_nr": ring.frame_nr + 1}, {"head": ring.frame_nr}, {"head": -1}, {"frame_size": 2050},
                {"frame_size": 16}, {"frame_nr": 0}):
        with pytest.raises(ValueError):
            rx(*_call_args(d, ring, state, **bad))
    for bad_state in (array.array("i", bytes(8 * FAST_STATE_LEN)), array.array("q", bytes(64))):
        with pytest.raises(ValueError):
            rx(*_call_args(d, ring, bad_state))
    state[ST_HEAD] = 0
    assert bytes(ring.mm) == before and not any(state)
    assert rx(*_call_args(d, ring, state)) == 1  # the same call with good arguments forwards it
    assert state[ST_FAST] == 1 and state[ST_RX_PACKETS] == 1 and state[ST_HEAD] == 1
    assert ring.mm[0] == 0  # the slot went back


def test_the_links_take_turns_and_the_budget_holds(tmp_path: Path) -> None:
    """Two rings in one call: 64 frames of one, then 64 of the other; the budget is the total."""
    d, rings, _ = _established(tmp_path)
    a, b = FakeRing(frames=256), FakeRing(frames=256)
    a.put([build(Spec("out", 1, flags="S", ttl=1))] * 100)  # slow: the callback sees the order
    b.put([build(Spec("out", 1, flags="S", ttl=1))] * 100)
    seen: list[str] = []
    la = ("lan0", a.mm, a.frame_nr, a.frame_size, 1514, _state(), lambda off, now: seen.append("a"))
    lb = ("lan0", b.mm, b.frame_nr, b.frame_size, 1514, _state(), lambda off, now: seen.append("b"))
    n = RX((la, lb), 150, 1.0, True, d.router.fast_tables, d._egress, 1500, 0,
                               d.router.lean.c_state, d._send, d._lean_error, Output)
    assert n == 150 and seen == ["a"] * 64 + ["b"] * 64 + ["a"] * 22
    assert (la[5][ST_HEAD], lb[5][ST_HEAD]) == (86, 64)
    n = RX((la, lb), 1000, 1.0, True, d.router.fast_tables, d._egress, 1500, 2_000_000,
                               d.router.lean.c_state, d._send, d._lean_error, Output)
    assert n == 50 and (la[5][ST_HEAD], lb[5][ST_HEAD]) == (100, 100)  # then nothing more, spin or not


@pytest.mark.parametrize("entry", [
    ("not a tuple",), (1, 2), ({}, "fd", array.array("q", bytes(8 * FAST_STATE_LEN))),
    ({}, -1, array.array("q", bytes(8 * FAST_STATE_LEN))), (None, 5, array.array("q", bytes(8 * FAST_STATE_LEN))),
    ({}, 5, array.array("i", bytes(8 * FAST_STATE_LEN))), ({}, 5, array.array("q", bytes(64))),
    ({}, 5, b"read-only state"),
])
def test_unusable_egress_entries_leave_the_frame_to_python(tmp_path: Path, entry: Any) -> None:
    d, _rings, _ = _established(tmp_path)
    ring = FakeRing()
    ring.put([build(Spec("out", 0))])
    before = bytes(ring.mm)
    state = _state()
    slow = _Slow()
    RX(*_call_args(d, ring, state, egress={"lan1": entry}, slow=slow))
    assert slow.offsets == [0] and state[ST_FAST] == 0 and state[ST_RX_PACKETS] == 1
    assert bytes(ring.mm)[4:] == before[4:] and ring.mm[0] == 0  # untouched but for its status


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=0, max_size=4 * 2048), st.integers(0, 63), st.integers(0, 70),
       st.sets(st.integers(0, 63), max_size=8))
def test_hostile_ring_contents_never_crash(data: bytes, head: int, budget: int, ready: set[int]) -> None:
    """Anything in the slots: the call returns, walks slots in order from head while they are
    handed over (at most budget), and writes nothing outside the slots it walked."""
    with tempfile.TemporaryDirectory() as tmp:
        d, _rings, _ = _established(Path(tmp))
        ring = FakeRing()
        ring.mm[:len(data)] = data
        for i in range(ring.frame_nr):
            ring.mm[i * 2048] = (ring.mm[i * 2048] | 1) if i in ready else (ring.mm[i * 2048] & ~1 & 0xFF)
        before = bytes(ring.mm)
        slow = _Slow()
        state = _state()
        done = RX(*_call_args(d, ring, state, slow=slow, head=head, budget=budget))
        walked = []
        i = head
        while len(walked) < budget and i in ready and i not in walked:
            walked.append(i)
            i = (i + 1) % ring.frame_nr
        assert done == len(walked) and state[ST_HEAD] == i and state[ST_RX_PACKETS] == len(walked)
        assert slow.offsets == [j * 2048 for j in walked][:len(slow.offsets)]
        for j in range(ring.frame_nr):
            if j not in walked:
                assert bytes(ring.mm[j * 2048:(j + 1) * 2048]) == before[j * 2048:(j + 1) * 2048]
            else:
                assert not ring.mm[j * 2048] & 1 and ring.mm[j * 2048 + 4:j * 2048 + 32] == before[j * 2048 + 4:j * 2048 + 32]


def test_a_long_run_leaks_neither_references_nor_memory(tmp_path: Path) -> None:
    d, rings, txs = _established(tmp_path)
    lan0 = d.links["lan0"]
    # established (C), partial (C), a new flow (handed back), an unresolved next hop (handed back)
    block = [build(Spec("out", 0, size=i % 40)) for i in range(20)] + \
        [build(Spec("out", 1, flags="PA", partial=True))] * 5 + [build(Spec("out", 0, flags="S", ttl=1))]
    peer = txs["lan1"]._peer
    flow = d.router.fast_tables["lan0"][1][17][bytes.fromhex("c0a8000bcb00710a9c410035")]
    hdr = d._egress["lan1"][0]["203.0.113.10"]
    watched = [flow, flow.o_hop, hdr, d._egress["lan1"], d.router.fast_tables["lan0"]]

    def rounds(n: int) -> None:
        for _ in range(n):
            rings["lan0"].put(block)
            d._drain(lan0)
            try:
                while peer.recv(4096):
                    pass
            except BlockingIOError:
                pass

    rounds(50)
    gc.collect()
    refs = [sys.getrefcount(o) for o in watched]
    tracemalloc.start()
    try:
        rounds(50)
        gc.collect()
        start, _ = tracemalloc.get_traced_memory()
        rss0 = _rss()
        rounds(1000)
        gc.collect()
        end, _ = tracemalloc.get_traced_memory()
        rss1 = _rss()
    finally:
        tracemalloc.stop()
    assert [sys.getrefcount(o) for o in watched] == refs
    lan0.fold_fast_state()
    assert lan0.rx_fast >= 1000 * 25
    assert end - start < 64 * 1024, end - start  # Python objects: the Counter/ints settle, nothing grows
    assert rss1 - rss0 < 4 << 20, rss1 - rss0


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def test_real_send_socket_on_a_socketpair_gets_the_whole_frame() -> None:
    """The fd path (sendmmsg, MSG_DONTWAIT) on a plain datagram socket: one datagram per frame."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with a, b, tempfile.TemporaryDirectory() as tmp:
        d, _rings, _ = _established(Path(tmp))
        state_lan1 = _state()
        egress = {"lan1": (d._egress["lan1"][0], a.fileno(), state_lan1)}
        ring = FakeRing()
        frame = build(Spec("out", 0, size=7))
        ring.put([frame])
        RX(*_call_args(d, ring, _state(), egress=egress))
        got = b.recv(4096)
        assert got[:10] == bytes(10) and Ether(got[10:])[IP].src == WAN
        assert len(got) == 10 + len(frame[0])
        assert [state_lan1[ST_TX_PACKETS], state_lan1[ST_TX_BYTES]] == [1, len(frame[0])]


def test_send_errors_are_counted_by_errno(tmp_path: Path) -> None:
    """A refused send is counted under its errno, in C and in Python alike, and logged."""
    for c_path in (True, False):
        (tmp_path / str(c_path)).mkdir()
        d, rings, txs, clock = make_daemon(tmp_path / str(c_path))
        d.ring_rx = RX if c_path else None  # (C also with PASSNAT_PURE set)
        learn(d, rings)
        for blk in establish()[:2]:
            clock.now += blk["dt"]
            rings[blk["link"]].put(blk["frames"])
            d._drain(d.links[blk["link"]])
        txs["lan1"].fail = True  # an unconnected datagram socket: ENOTCONN
        rings["lan0"].put([build(Spec("out", 0))] * 3)
        d._drain(d.links["lan0"])
        counters = d.links["lan1"].stats()["counters"]
        assert counters["tx_error"] == 3 and counters["tx_error_ENOTCONN"] == 3, counters


def test_new_flows_take_the_lean_path_in_the_loop(tmp_path: Path) -> None:
    """A new plain NAPT flow's first frame never reaches slow(): the loop calls the lean path and
    sends its output itself; one with an unresolved next hop goes out through _send (ARP)."""
    d, _rings, txs = _established(tmp_path)
    ring = FakeRing()
    new = raw(Ether(src=PC_MAC, dst=MACS["lan0"]) / IP(src=PC, dst=SRV) / UDP(sport=41000, dport=7) / b"hello")
    far = raw(Ether(src=PC_MAC, dst=MACS["lan0"]) / IP(src=PC, dst="203.0.113.77") / UDP(sport=41001, dport=7))
    ring.put([(new, 0, b"", None), (far, 0, b"", None)])
    slow = _Slow()
    lan1 = d._egress["lan1"][2]
    sent_before = lan1[ST_TX_PACKETS]
    assert RX(*_call_args(d, ring, _state(), slow=slow)) == 2
    assert slow.offsets == []
    assert {(s["inside_port"], s["remote"]) for s in d.router.sessions(1.0)} >= {(41000, SRV), (41001, "203.0.113.77")}
    assert lan1[ST_TX_PACKETS] == sent_before + 1  # the first from C; the second waits for ARP
    frames = [Ether(f) for f in txs["lan1"].frames[-2:]]
    assert frames[1].haslayer(ARP) and frames[1][ARP].pdst == "203.0.113.77"  # then the ARP request
    last = frames[0][IP]
    assert (last.src, last.dst, last[UDP].sport, bytes(last[UDP].payload)) == (WAN, SRV, 41000, b"hello")
    assert d.links["lan1"].neigh is not None and d.links["lan1"].neigh.queued == 1


def test_a_ring_smaller_than_the_budget_walks_each_frame_once(tmp_path: Path) -> None:
    # frames forwarded in C stay the reader's until the walk ends: a walk never comes round to them again
    d, _rings, txs = _established(tmp_path)
    ring = FakeRing(frames=4)
    ring.put([build(Spec("out", i % len(FLOWS))) for i in range(4)])
    state = _state()
    slow = _Slow()
    sent_before = len(txs["lan1"].frames)  # (what establishing sent)
    done = RX(*_call_args(d, ring, state, slow=slow, budget=256))
    assert done == 4 and state[ST_RX_PACKETS] == 4 and state[ST_FAST] == 4 and slow.offsets == []
    assert len(txs["lan1"].frames) - sent_before == 4
    assert state[ST_HEAD] == 0 and all(not ring.mm[i * 2048] & 1 for i in range(4))  # all handed back


# ---------------------------------------------------------------- sleeping in C (the 13th argument)


def _sleep(until: float, rings: list[socket.socket], others: tuple[socket.socket, ...] = ()) -> tuple[Any, ...]:
    """ring_rx's sleep argument: sleep on ``rings`` (stand-ins for the rings' descriptors) and
    ``others`` until ``until`` (time.monotonic())."""
    fds = b"".join(struct.pack("=ihh", s.fileno(), select.POLLIN, 0) for s in [*rings, *others])
    return (int(until * 1e9), fds, tuple(s.fileno() for s in rings))


def _last_seen(d: Daemon, port: int) -> float:
    return next(s["last"] for s in d.router.sessions(1.0) if s["inside_port"] == port)


def test_a_frame_that_arrives_while_it_sleeps_is_forwarded_in_the_same_call(tmp_path: Path) -> None:
    """After established flows only, the C loop sleeps on the descriptors itself; the frame that
    wakes it is forwarded at once, with the clock read after the sleep as its session's last-seen."""
    d, _rings, txs = _established(tmp_path)
    ring, state = FakeRing(), _state()
    ring.put([build(Spec("out", 0))])
    bell, ringer = socket.socketpair()

    def arrive() -> None:
        time.sleep(0.2)
        ring.put([build(Spec("out", 1))])
        ringer.send(b"x")  # what the kernel's poll wake-up is for a real ring

    sent_before = len(txs["lan1"].frames)
    t = threading.Thread(target=arrive)
    t0 = time.monotonic()
    t.start()
    try:
        done = RX(*_call_args(d, ring, state, sleep=_sleep(t0 + 20.0, [bell])))
    finally:
        t.join()
        bell.close()
        ringer.close()
    elapsed = time.monotonic() - t0
    assert done == 2 and state[ST_FAST] == 2 and state[ST_HEAD] == 2
    assert len(txs["lan1"].frames) - sent_before == 2
    # woken for a slot it then found empty (the bell still rings): the daemon's turn, long before 20 s
    assert 0.15 < elapsed < 10.0
    assert _last_seen(d, FLOWS[0][2]) == 1.0  # the clock it was given
    assert t0 < _last_seen(d, FLOWS[1][2]) < t0 + elapsed  # the clock read after the sleep


def test_with_nothing_arriving_it_returns_when_the_turn_is_due(tmp_path: Path) -> None:
    d, _rings, _ = _established(tmp_path)
    ring, state = FakeRing(), _state()
    ring.put([build(Spec("out", 0))])
    bell, ringer = socket.socketpair()
    t0 = time.monotonic()
    try:
        assert RX(*_call_args(d, ring, state, sleep=_sleep(t0 + 0.3, [bell]))) == 1
    finally:
        bell.close()
        ringer.close()
    assert 0.29 < time.monotonic() - t0 < 5.0


def test_any_other_descriptor_signal_or_python_frame_ends_it_at_once(tmp_path: Path) -> None:
    d, _rings, _ = _established(tmp_path)
    bell, ringer = socket.socketpair()
    ctl, client = socket.socketpair()
    try:
        # another descriptor ready (the control socket, the signal pipe): the daemon's turn
        ring, state = FakeRing(), _state()
        ring.put([build(Spec("out", 0))])
        client.send(b"request")
        t0 = time.monotonic()
        assert RX(*_call_args(d, ring, state, sleep=_sleep(t0 + 20.0, [bell], (ctl,)))) == 1
        assert time.monotonic() - t0 < 5.0
        # a frame that went to Python (TTL 1): its effects may need the loop's turn, no sleep
        ring, state, slow = FakeRing(), _state(), _Slow()
        ring.put([build(Spec("out", 0)), build(Spec("out", 0, ttl=1))])
        t0 = time.monotonic()
        assert RX(*_call_args(d, ring, state, slow=slow, sleep=_sleep(t0 + 20.0, [bell]))) == 2
        assert len(slow.offsets) == 1 and time.monotonic() - t0 < 5.0
        # nothing walked at all: straight back (the loop's poll woke for something else)
        ring, state = FakeRing(), _state()
        t0 = time.monotonic()
        assert RX(*_call_args(d, ring, state, sleep=_sleep(t0 + 20.0, [bell]))) == 0
        assert time.monotonic() - t0 < 5.0
        # a signal during the sleep (EINTR): back to Python, which runs its handler
        got: list[int] = []
        old = signal.signal(signal.SIGALRM, lambda signum, frame: got.append(signum))
        try:
            ring, state = FakeRing(), _state()
            ring.put([build(Spec("out", 0))])
            t0 = time.monotonic()
            signal.setitimer(signal.ITIMER_REAL, 0.2)
            assert RX(*_call_args(d, ring, state, sleep=_sleep(t0 + 20.0, [bell]))) == 1
            assert 0.15 < time.monotonic() - t0 < 10.0 and got == [signal.SIGALRM]
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)
        # a turn already due: no sleep
        ring, state = FakeRing(), _state()
        ring.put([build(Spec("out", 0))])
        t0 = time.monotonic()
        assert RX(*_call_args(d, ring, state, sleep=_sleep(t0 - 1.0, [bell]))) == 1
        assert time.monotonic() - t0 < 5.0
    finally:
        for s in (bell, ringer, ctl, client):
            s.close()


@pytest.mark.parametrize("sleep", [5, (1, "fds", ()), (1, b"abc", ()), (1.5, b"", ()), (1, b"", [3]),
                                   (1, b"", tuple(range(17))), (1, b"", ("x",)), (1, b"")])
def test_a_bad_sleep_argument_is_refused_before_any_slot_is_touched(tmp_path: Path, sleep: Any) -> None:
    d, _rings, _ = _established(tmp_path)
    ring, state = FakeRing(), _state()
    ring.put([build(Spec("out", 0))])
    before = bytes(ring.mm)
    with pytest.raises((TypeError, ValueError)):
        RX(*_call_args(d, ring, state, sleep=sleep))
    assert bytes(ring.mm) == before and not any(state)


def test_the_reactor_gives_every_watched_descriptor_as_struct_pollfd() -> None:
    r = Reactor()
    assert r.pollfds() == b""
    r.watch(5, select.POLLIN, lambda ev: None)
    r.watch(7, select.POLLIN | select.POLLOUT, lambda ev: None)
    assert r.pollfds() == struct.pack("=ihhihh", 5, select.POLLIN, 0, 7, select.POLLIN | select.POLLOUT, 0)
    r.modify(7, select.POLLOUT)
    r.unwatch(5)
    r.unwatch(9)  # never watched
    assert r.pollfds() == struct.pack("=ihh", 7, select.POLLOUT, 0)


def test_the_daemon_lets_the_c_walk_sleep_only_until_its_next_turn(tmp_path: Path) -> None:
    """What _drain_all hands ring_rx as its sleep: the loop's next turn bounded by the engine's
    deadline, every watched descriptor, the rings' descriptors; None whenever it may not sleep."""
    d, _rings, _ = _established(tmp_path)
    seen: list[Any] = []
    d.ring_rx = lambda *args: seen.append(args[12]) or 0
    d._ring_fds = (7, 8)
    d.reactor.watch(7, select.POLLIN, lambda ev: None)
    d._until = 0.0
    d._drain_all()
    assert seen[-1] is None  # the previous turn left frames waiting (or nothing said when to wake)
    d._until = 100.0
    d._drain_all()
    assert seen[-1] is None  # the fake clock: the C walk could not read it after a sleep
    d.clock = time.monotonic
    d.router._deadline = float("inf")
    d._drain_all()
    assert seen[-1] == (100_000_000_000, struct.pack("=ihh", 7, select.POLLIN, 0), (7, 8))
    d.router._deadline = 50.0  # an engine timer set since the turn was planned
    d._drain_all()
    assert seen[-1][0] == 50_000_000_000
    for due in (float("-inf"), 0.0, float("nan")):  # timers due at once (a reload sets -inf)
        d.router._deadline = due
        d._drain_all()
        assert seen[-1] is None
    d.router._deadline = float("inf")
    for flag in ("stopping", "reload_requested"):
        setattr(d, flag, True)
        d._drain_all()
        assert seen[-1] is None
        setattr(d, flag, False)
