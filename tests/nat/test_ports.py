"""Outside port allocation (issue 13 §2): the documented policy, and O(1) cost whatever the pattern.

Cost is measured with ``IdPool.ops`` (bitmap words read), never with a clock:
the old allocator scanned upward port by port, so with inside hosts that use
the same sequential ports the n-th mapping cost O(n), and a refusal with a
SNAPT port reserved scanned all 64,512 ports.
"""
from __future__ import annotations

import logging
import random
import socket
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import passnat
from passnat.nat.ports import IKE_PORTS, RANDOM_PROBES, IdPool, port_range
from passnat.packet.checksum import checksum

#: word reads per operation: at most two searches of 6 reads (wrapping), plus the random probes
SEARCH_BOUND = 12
RANDOM_BOUND = SEARCH_BOUND + RANDOM_PROBES


class Reference:
    """The documented policy, written the slow obvious way."""

    def __init__(self, reserved: set[int] | None = None):
        self.used: set[int] = set()
        self.reserved = set(reserved or ())

    def free(self, v: int) -> bool:
        return v not in self.used and v not in self.reserved

    def take(self, preferred: int, lo: int, hi: int) -> int | None:
        if lo <= preferred <= hi and self.free(preferred):
            self.used.add(preferred)
            return preferred
        start = preferred + 1 if lo <= preferred < hi else lo
        for v in [*range(start, hi + 1), *range(lo, start)]:
            if self.free(v):
                self.used.add(v)
                return v
        return None


def take_counted(pool: IdPool, preferred: int, lo: int, hi: int, **kw: bool) -> tuple[int | None, int]:
    before = pool.ops
    v = pool.take(preferred, lo, hi, object(), **kw)
    return v, pool.ops - before


# ---------------------------------------------------------------- policy


def test_keeps_the_inside_port_then_the_nearest_free_above() -> None:
    pool = IdPool()
    assert pool.take(40000, 1024, 65535, "a") == 40000
    assert pool.take(40000, 1024, 65535, "b") == 40001
    assert pool.take(40001, 1024, 65535, "c") == 40002
    assert pool.take(40003, 1024, 65535, "d") == 40003


def test_wraps_to_the_bottom_of_the_range_and_stays_in_it() -> None:
    pool = IdPool()
    assert pool.take(65535, 1024, 65535, "a") == 65535
    assert pool.take(65535, 1024, 65535, "b") == 1024
    assert pool.take(1023, 1, 1023, "c") == 1023
    assert pool.take(1023, 1, 1023, "d") == 1  # below 1024 stays below 1024 (RFC 4787 REQ-3)
    assert port_range(500) == (1, 1023) and port_range(1024) == (1024, 65535)


def test_reserved_ports_are_never_handed_out_nor_claimed() -> None:
    pool = IdPool(reserved=frozenset({8080, 8081}))
    assert pool.take(8080, 1024, 65535, "a") == 8082
    assert not pool.claim(8081, "b")
    assert pool.claim(8083, "c") and not pool.claim(8083, "d")


def test_changing_the_reservation_keeps_ports_in_use() -> None:
    pool = IdPool()
    assert pool.take(8080, 1024, 65535, "a") == 8080
    pool.reserved = frozenset({8080, 9000})  # a reload adds SNAPT on 8080 while a mapping holds it
    assert pool.used[8080] == "a" and not pool.is_free(9000)
    pool.release(8080, "a")
    assert not pool.is_free(8080)  # back to SNAPT, not to NAPT
    pool.reserved = frozenset()
    assert pool.is_free(8080) and pool.is_free(9000)


def test_release_only_by_its_owner() -> None:
    pool = IdPool()
    pool.take(5000, 1024, 65535, "a")
    pool.release(5000, "someone else")
    assert not pool.is_free(5000)
    pool.release(5000, "a")
    assert pool.is_free(5000)


def test_random_mode_keeps_ike_ports_and_stays_in_range() -> None:
    pool = IdPool(rng=random.Random(1), reserved=frozenset({8080}))
    got = [pool.take(40000 + i, 1024, 65535, i, keep_if_free=False) for i in range(200)]
    assert all(v is not None and 1024 <= v <= 65535 and v != 8080 for v in got)
    assert len(set(got)) == 200 and sum(1 for i, v in enumerate(got) if v == 40000 + i) < 5
    for p in IKE_PORTS:
        assert pool.take(p, 1, 65535, "ike", keep_if_free=False) == p


# ---------------------------------------------------------------- O(1)


def test_identical_sequential_ports_from_many_hosts_cost_o1() -> None:
    """50 hosts each counting up from 20000: every take reads a bounded number of words."""
    pool = IdPool()
    worst = 0
    for i in range(1200):
        for _host in range(50):
            v, ops = take_counted(pool, 20000 + i, 1024, 65535)
            assert v is not None
            worst = max(worst, ops)
    assert len(pool.used) == 60000
    assert worst <= SEARCH_BOUND, worst


def test_exhaustion_with_a_reserved_port_is_detected_in_o1() -> None:
    pool = IdPool(reserved=frozenset({8080}))
    for p in range(1024, 65536):
        pool.take(p, 1024, 65535, p)
    assert len(pool.used) == 64511 and 8080 not in pool.used
    assert not pool.has_free(1024, 65535)
    for p in (1024, 8080, 40000, 65535):
        v, ops = take_counted(pool, p, 1024, 65535)
        assert v is None and ops <= SEARCH_BOUND, (p, ops)
    random_pool = IdPool(rng=random.Random(2), reserved=frozenset({8080}))
    for p in range(1024, 65536):
        if p != 8080:
            assert random_pool.claim(p, p)
    v, ops = take_counted(random_pool, 40000, 1024, 65535, keep_if_free=False)
    assert v is None and ops <= RANDOM_BOUND
    # one port freed anywhere is found at once, from any start
    pool.release(33333, pool.used[33333])
    v, ops = take_counted(pool, 65535, 1024, 65535)
    assert v == 33333 and ops <= SEARCH_BOUND


OPS = st.lists(st.one_of(
    st.tuples(st.just("take"), st.integers(0, 65535), st.sampled_from(["low", "high", "all", "narrow"])),
    st.tuples(st.just("release"), st.integers(0, 10 ** 6)),
    st.tuples(st.just("claim"), st.integers(0, 65535)),
    st.tuples(st.just("reserve"), st.frozensets(st.integers(0, 65535), max_size=8)),
), max_size=300)

RANGES = {"low": (1, 1023), "high": (1024, 65535), "all": (0, 65535), "narrow": (30000, 30063)}


@settings(max_examples=150, deadline=None)
@given(ops=OPS, seed=st.integers(0, 3), crowd=st.sampled_from([None, (30000, 30064), (1024, 65536)]))
def test_pool_matches_the_policy_and_every_operation_is_bounded(
        ops: list[tuple], seed: int, crowd: tuple[int, int] | None) -> None:
    """Against the obvious implementation of the same policy, from an empty, crowded or full pool."""
    pool, ref = IdPool(), Reference()
    if crowd is not None:  # pre-fill a stretch (or the whole high range) but a few random holes
        holes = set(random.Random(seed).sample(range(*crowd), 3))
        for v in range(*crowd):
            if v not in holes:
                assert pool.claim(v, ("pre", v))
                ref.used.add(v)
    for op in ops:
        if op[0] == "take":
            lo, hi = RANGES[op[2]]
            pref = op[1]
            v, cost = take_counted(pool, pref, lo, hi)
            assert v == ref.take(pref, lo, hi)
            assert cost <= SEARCH_BOUND
        elif op[0] == "release" and ref.used:
            victim = sorted(ref.used)[op[1] % len(ref.used)]
            pool.release(victim)
            ref.used.discard(victim)
        elif op[0] == "claim":
            assert pool.claim(op[1], "c") == ref.free(op[1])
            if ref.free(op[1]):
                ref.used.add(op[1])
        elif op[0] == "reserve":
            pool.reserved = op[1]
            ref.reserved = set(op[1])
        for lo, hi in RANGES.values():
            before = pool.ops
            assert pool.has_free(lo, hi) == any(ref.free(v) for v in range(lo, hi + 1))
            assert pool.ops - before <= SEARCH_BOUND // 2
    # the free counters behind "no port left" agree with the bitmap and with the reference
    assert pool._free == [pool.free_count(0, 0), pool.free_count(1, 1023), pool.free_count(1024, 65535)]
    assert pool._free[2] == 65536 - 1024 - sum(1 for v in ref.used | ref.reserved if v >= 1024)


# ---------------------------------------------------------------- through the engine


CONFIG = """\
interface lan0 add 10.0.0.1/8
interface lan1 add 203.0.113.1/24
route add default 203.0.113.254
nat napt add private 10.0.0.0-10.255.255.255 interface lan1
nat snapt add protocol tcp listen 8080 forward 10.0.0.9 80 interface lan1
nat session maximum 200000
"""


def _addr(s: str) -> int:
    return int.from_bytes(socket.inet_aton(s), "big")


def syn(src: int, dst: int, sport: int, dport: int) -> bytes:
    tcp = bytearray(struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 0x50, 0x02, 65535, 0, 0))
    struct.pack_into("!H", tcp, 16, checksum(struct.pack("!IIBBH", src, dst, 0, 6, len(tcp)) + tcp))
    ip = bytearray(struct.pack("!BBHHHBBHII", 0x45, 0, 20 + len(tcp), 0, 0, 64, 6, 0, src, dst))
    struct.pack_into("!H", ip, 10, checksum(ip))
    return bytes(ip + tcp)


def test_engine_many_hosts_same_ports_then_exhaustion_refusals_are_o1() -> None:
    r = passnat.Router(passnat.parse_config(CONFIG))
    wan, remote = _addr("203.0.113.1"), _addr("198.51.100.7")
    hosts = [_addr("10.0.1.1") + h for h in range(8)]
    for port in range(1024, 1024 + 8064):  # 8 hosts x 8064 identical sequential ports = 64,512 SYNs
        for h in hosts:
            r.handle("lan0", syn(h, remote, port, 443), 0.0)
    pool = r.table.pool(6, wan)
    assert len(pool.used) == 64511 and 8080 not in pool.used  # every port but SNAPT's
    assert r.counters()["nat_no_free_port"] == 1
    assert pool.ops <= SEARCH_BOUND * 64512
    before = pool.ops
    for i in range(1000):
        assert r.handle("lan0", syn(_addr("10.0.2.1"), remote, 20000 + i, 443), 1.0) == []
    assert r.counters()["nat_no_free_port"] == 1001
    assert pool.ops - before <= SEARCH_BOUND * 1000
    # the SNAPT port still reaches its server
    out = r.handle("lan1", syn(remote, wan, 5555, 8080), 2.0)
    assert out and out[0].packet[16:20] == socket.inet_aton("10.0.0.9")


def test_refusals_on_the_lean_path_equal_the_full_pipeline(caplog: pytest.LogCaptureFixture) -> None:
    """The lean path (nat/lean.py, and its C build, which refuses without calling mapping_for
    when the pool's free count for the range is 0) refuses a new flow when the range is full
    exactly as the full pipeline does: same outputs, counters and log lines; an endpoint that
    already has a mapping keeps getting sessions on it (endpoint-independent mapping)."""
    routers = [passnat.Router(passnat.parse_config(CONFIG), seed=1, lean=lean, speedups=c)
               for lean, c in ((True, None), (True, False), (False, False))]
    wan = _addr("203.0.113.1")
    remote = _addr("198.51.100.7")
    mapped = _addr("10.0.3.2")
    for r in routers:
        assert len(r.handle("lan0", syn(mapped, remote, 40000, 443), 1.0)) == 1  # its mapping: port 40000
        for proto in (6, 17):
            pool = r.table.pool(proto, wan)
            for v in range(1024, 65536):
                pool.claim(v, "full")  # every other high port taken (8080 stays SNAPT's)
            assert not pool.has_free(1024, 65535)
    logs = []
    for r in routers:
        caplog.clear()
        with caplog.at_level(logging.WARNING, "passnat"):
            outs = [r.handle("lan0", syn(_addr("10.0.3.1"), remote, 20000 + i, 443), 5.0 + i * 0.4) for i in range(10)]
            outs.append(r.handle("lan0", syn(_addr("10.0.3.1"), remote, 999, 443), 9.0))  # the low range is free
            outs.append(r.handle("lan0", syn(mapped, remote + 1, 40000, 443), 9.5))  # a second flow, same mapping
        logs.append([rec.getMessage() for rec in caplog.records])
        assert outs[:10] == [[]] * 10 and len(outs[10]) == 1 and len(outs[11]) == 1
        assert outs[11][0].packet[12:16] == socket.inet_aton("203.0.113.1") and outs[11][0].packet[20:22] == b"\x9c\x40"
    assert routers[0].counters() == routers[1].counters() == routers[2].counters()
    assert routers[0].counters()["nat_no_free_port"] == 10
    assert logs[0] == logs[1] == logs[2] and len(logs[0]) == 4  # once a second
    assert routers[0].sessions() == routers[1].sessions() == routers[2].sessions()
