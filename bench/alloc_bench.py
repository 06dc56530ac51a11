"""Port-allocation benchmark (issue 13 §2): new mappings whatever the pattern, refusals once exhausted.

In-process, no I/O, like engine_bench.py: prebuilt TCP SYNs handed to
``Router.handle``.  Every figure comes from the same run, so the ratios hold
whatever else the machine is doing.  Printed figures, not a pass/fail test.

  * single host: one inside address opens N connections from sequential
    source ports (the reference new-session rate);
  * 3 and 50 hosts: the same N connections spread over 3 (50) inside
    addresses that all count up from the *same* source port, so every host
    after the first collides on every port (the pattern that made allocation
    O(n): 257 sessions/s with three hosts before the free-port bitmap);
  * exhaustion: 8 hosts take all 64,511 free TCP ports of the global address
    (SNAPT reserves 8080), then SYNs from new source ports are refused
    (``nat_no_free_port``); refusals/s against the single-host rate.

Goals (issue 13): multi-host >= 50 % of the single-host rate; refusals >= 10x.
"""
from __future__ import annotations

import argparse
import gc
import logging
import socket
import struct
import time

import passnat
from passnat.packet.checksum import checksum

CONFIG = """\
interface lan0 add 10.0.0.1/8
interface lan1 add 203.0.113.1/24
route add default 203.0.113.254
nat napt add private 10.0.0.0-10.255.255.255 interface lan1
nat snapt add protocol tcp listen 8080 forward 10.0.0.9 80 interface lan1
nat session maximum 1000000
"""

FIRST_PORT = 20000


def addr(s: str) -> int:
    return int.from_bytes(socket.inet_aton(s), "big")


HOST0 = addr("10.0.1.1")
REMOTE = addr("198.51.100.7")
WAN = addr("203.0.113.1")


def syn(src: int, dst: int, sport: int, dport: int) -> bytes:
    """An IPv4 TCP SYN with correct checksums, built with struct."""
    tcp = bytearray(struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 0x50, 0x02, 65535, 0, 0))
    struct.pack_into("!H", tcp, 16, checksum(struct.pack("!IIBBH", src, dst, 0, 6, len(tcp)) + tcp))
    ip = bytearray(struct.pack("!BBHHHBBHII", 0x45, 0, 20 + len(tcp), 0, 0, 64, 6, 0, src, dst))
    struct.pack_into("!H", ip, 10, checksum(ip))
    return bytes(ip + tcp)


def pattern(hosts: int, n: int, first: int = FIRST_PORT) -> list[bytes]:
    """n SYNs: ``hosts`` inside addresses, each counting up from the same source port."""
    per = n // hosts
    return [syn(HOST0 + h, REMOTE, first + i, 443) for i in range(per) for h in range(hosts)]


def timed(router: passnat.Router, pkts: list[bytes], now: float) -> float:
    gc.collect()
    handle = router.handle
    t0 = time.perf_counter()
    for p in pkts:
        handle("lan0", p, now)
    return len(pkts) / (time.perf_counter() - t0)


def new_router() -> passnat.Router:
    return passnat.Router(passnat.parse_config(CONFIG))


def session_rate(hosts: int, n: int) -> tuple[float, int]:
    r = new_router()
    rate = timed(r, pattern(hosts, n), 0.0)
    made = len(r.table)
    assert made == n // hosts * hosts, (hosts, made)
    return rate, r.table.pool(6, WAN).ops // made


def exhausted_router() -> passnat.Router:
    r = new_router()
    for p in pattern(8, 8 * 8064, first=1024):  # 64,512 SYNs for 64,511 free ports
        r.handle("lan0", p, 0.0)
    pool = r.table.pool(6, WAN)
    assert len(pool.used) == 64511 and not pool.has_free(1024, 65535), len(pool.used)
    return r


def run(n: int, reps: int) -> None:
    print(f"passnat port-allocation benchmark: TCP SYNs, {n:,} new connections per pattern, best of {reps}")
    single = multi3 = multi50 = 0.0
    ops: dict[int, int] = {}
    for _ in range(reps):  # interleaved, so load changes hit every pattern alike
        for hosts in (1, 3, 50):
            rate, ops[hosts] = session_rate(hosts, n)
            if hosts == 1:
                single = max(single, rate)
            elif hosts == 3:
                multi3 = max(multi3, rate)
            else:
                multi50 = max(multi50, rate)
    r = exhausted_router()
    refused_before = r.counters().get("nat_no_free_port", 0)
    refusals = 0.0
    for k in range(reps):
        pkts = [syn(HOST0 + 100, REMOTE, 30000 + i, 443 + k) for i in range(n)]
        refusals = max(refusals, timed(r, pkts, 1.0))
    refused = r.counters().get("nat_no_free_port", 0) - refused_before
    assert refused == reps * n, refused
    pool = r.table.pool(6, WAN)  # the allocator alone, without the engine's per-packet work
    take = pool.take
    pool_refusals = 0.0
    for _ in range(reps):
        t0 = time.perf_counter()
        for i in range(n):
            take(30000 + i, 1024, 65535, None)
        pool_refusals = max(pool_refusals, n / (time.perf_counter() - t0))
    assert not pool.has_free(1024, 65535)

    def line(label: str, rate: float, note: str = "") -> None:
        print(f"  {label:52s} {rate:10,.0f} /s{note}")

    line("1 inside host, sequential ports: new sessions", single,
         f"   (allocator: {ops[1]} word reads per mapping)")
    for hosts, rate in ((3, multi3), (50, multi50)):
        line(f"{hosts} inside hosts, identical sequential ports", rate,
             f"   {rate / single:6.0%} of single-host (goal >= 50 %; {ops[hosts]} word reads per mapping)")
    line("exhausted (64,511 ports used, 8080 reserved): refusals", refusals,
         f"   {refusals / single:6.1f}x the single-host rate (goal >= 10x)")
    line("  of which the allocator alone (IdPool.take -> None)", pool_refusals,
         f"   {pool_refusals / single:6.1f}x (the rest: the engine's checks of a first packet)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--flows", type=int, default=30_000, help="connections per pattern (<= 45,000)")
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    logging.disable(logging.WARNING)  # "no free port" is logged once a second; not a figure
    run(min(args.flows, 45_000), args.reps)


if __name__ == "__main__":
    main()
