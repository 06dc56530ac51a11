"""Engine benchmark: established-flow packets/s, new sessions/s, memory per session.

In-process, no I/O: packets are prebuilt bytes handed to ``Router.handle``.
Printed figures, not a pass/fail test.  Run with ``make bench``.

  * established flows: 100,000 sessions (TCP and UDP, 1,000 inside endpoints x
    100 remotes, so EIM mappings are shared), every packet a hit, with the C
    fast path (passnat._speedups) and with the pure-Python one;
  * new sessions: the first packet of 100,000 flows (the slow path: parse,
    route, limits, port allocation, session and flows);
  * memory: tracemalloc's growth while creating 100,000 sessions.
"""
from __future__ import annotations

import argparse
import gc
import socket
import struct
import time
import tracemalloc

import passnat
from passnat.packet.checksum import checksum

CONFIG = """\
interface lan0 add 10.0.0.1/8
interface lan1 add 203.0.113.1/24
route add default 203.0.113.254
nat napt add private 10.0.0.0-10.255.255.255 interface lan1
nat session maximum 1000000
"""


def packet(proto: int, src: int, dst: int, sport: int, dport: int, payload: int = 18) -> bytes:
    """An IPv4 TCP (ACK) or UDP packet with correct checksums, built with struct."""
    if proto == 6:
        l4 = bytearray(struct.pack("!HHIIBBHHH", sport, dport, 1, 1, 0x50, 0x10, 65535, 0, 0)) + b"p" * payload
    else:
        l4 = bytearray(struct.pack("!HHHH", sport, dport, 8 + payload, 0)) + b"p" * payload
    pseudo = struct.pack("!IIBBH", src, dst, 0, proto, len(l4))
    cs = checksum(pseudo + l4)
    struct.pack_into("!H", l4, 16 if proto == 6 else 6, cs)
    hdr = bytearray(struct.pack("!BBHHHBBHII", 0x45, 0, 20 + len(l4), 0, 0, 64, proto, 0, src, dst))
    struct.pack_into("!H", hdr, 10, checksum(hdr))
    return bytes(hdr + l4)


def flows(n: int) -> list[bytes]:
    base = int.from_bytes(socket.inet_aton("10.0.0.2"), "big")
    remote = int.from_bytes(socket.inet_aton("198.51.0.1"), "big")
    out = []
    for i in range(n):
        proto = 6 if i % 2 else 17
        out.append(packet(proto, base + i // 100, remote + i % 100, 20000 + (i // 100) % 40000, 443))
    return out


def rate(fn, items: list[bytes], now: float) -> float:  # noqa: ANN001
    t0 = time.perf_counter()
    for p in items:
        fn("lan0", p, now)
    return len(items) / (time.perf_counter() - t0)


def run(n: int, reps: int) -> None:
    pkts = flows(n)
    print(f"passnat engine benchmark: {n:,} flows (TCP+UDP, {n // 100:,} inside endpoints x 100 remotes)")
    for speedups in (True, False):
        label = "C fast path" if speedups else "pure-Python fast path"
        r = passnat.Router(passnat.parse_config(CONFIG), speedups=speedups)
        if speedups and r._cfast is None:
            print("  (passnat._speedups is not built: only the pure-Python figures)")
            continue
        gc.collect()
        new = rate(r.handle, pkts, 0.0)
        assert len(r.table) == n, len(r.table)
        best = max(rate(r.handle, pkts, 1.0) for _ in range(reps))
        print(f"  {label:24s} established flows: {best:12,.0f} packets/s  (best of {reps})")
        if speedups:
            print(f"  {'slow path':24s} new sessions:      {new:12,.0f} sessions/s")
    r = passnat.Router(passnat.parse_config(CONFIG))
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for p in pkts:
        r.handle("lan0", p, 0.0)
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    print(f"  {'memory':24s} per session:       {(after - before) / n:12,.0f} bytes  (tracemalloc, {n:,} sessions)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--flows", type=int, default=100_000)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    run(args.flows, args.reps)


if __name__ == "__main__":
    main()
