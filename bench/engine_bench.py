"""Engine benchmark: established-flow packets/s, new sessions/s, memory per session.

In-process, no I/O: packets are prebuilt bytes handed to ``Router.handle``.
Printed figures, not a pass/fail test.  Run with ``make bench``.

  * established flows: 100,000 sessions (TCP and UDP, 1,000 inside endpoints x
    100 remotes, so EIM mappings are shared), every packet a hit, with the C
    fast path (passnat._speedups) and with the pure-Python one;
  * new sessions: the first packet of 100,000 flows (passnat/nat/lean.py for
    these plain NAPT flows), measured round by round next to the same
    measurement of a baseline revision (``--baseline``, default the main of
    issue 9, 6f0fa35) checked out into a temporary git worktree and built
    there: both figures and their ratio, from the same machine in one sitting;
  * memory: tracemalloc's growth while creating 100,000 sessions, and the
    resident set of a process holding 1,000,000 sessions (``--million``);
  * HA session sync (``ha_sync``, docs/ha.md): the same established flows and
    new sessions with the master's sync on -- changes noted by the engine,
    taken and framed (JSON + HMAC) every 512 packets as the daemon's loop
    does -- next to sync off, interleaved; and the full transfer's rate on
    both sides (the master framing, the backup applying).
"""
from __future__ import annotations

import argparse
import gc
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIG = """\
interface lan0 add 10.0.0.1/8
interface lan1 add 203.0.113.1/24
route add default 203.0.113.254
nat napt add private 10.0.0.0-10.255.255.255 interface lan1
nat session maximum 2000000
"""
BASELINE = "6f0fa35"  # main when issue 9 was filed ("today's main")


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s > 0xFFFF:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def packet(proto: int, src: int, dst: int, sport: int, dport: int, payload: int = 18) -> bytes:
    """An IPv4 TCP (ACK) or UDP packet with correct checksums, built with struct."""
    if proto == 6:
        l4 = bytearray(struct.pack("!HHIIBBHHH", sport, dport, 1, 1, 0x50, 0x10, 65535, 0, 0)) + b"p" * payload
    else:
        l4 = bytearray(struct.pack("!HHHH", sport, dport, 8 + payload, 0)) + b"p" * payload
    pseudo = struct.pack("!IIBBH", src, dst, 0, proto, len(l4))
    struct.pack_into("!H", l4, 16 if proto == 6 else 6, _checksum(pseudo + l4))
    hdr = bytearray(struct.pack("!BBHHHBBHII", 0x45, 0, 20 + len(l4), 0, 0, 64, proto, 0, src, dst))
    struct.pack_into("!H", hdr, 10, _checksum(bytes(hdr)))
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


def new_session_rate(n: int) -> float:
    """Sessions/s for the first packets of n flows into a fresh router (this process's passnat)."""
    import passnat
    pkts = flows(n)
    r = passnat.Router(passnat.parse_config(CONFIG))
    gc.collect()
    return rate(r.handle, pkts, 0.0)


def established(n: int, reps: int) -> None:
    import passnat
    pkts = flows(n)
    for speedups in (True, False):
        label = "C fast path" if speedups else "pure-Python fast path"
        r = passnat.Router(passnat.parse_config(CONFIG), speedups=speedups)
        if speedups and r._cfast is None:
            print("  (passnat._speedups is not built: only the pure-Python figures)")
            continue
        rate(r.handle, pkts, 0.0)
        assert len(r.table) == n, len(r.table)
        best = max(rate(r.handle, pkts, 1.0) for _ in range(reps))
        print(f"  {label:24s} established flows: {best:12,.0f} packets/s  (best of {reps})", flush=True)


def memory(n: int) -> None:
    import passnat
    pkts = flows(n)
    r = passnat.Router(passnat.parse_config(CONFIG))
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for p in pkts:
        r.handle("lan0", p, 0.0)
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    print(f"  {'memory':24s} per session:       {(after - before) / n:12,.0f} bytes  "
          f"(tracemalloc, {n:,} sessions)", flush=True)


def _sync_rate(n: int, reps: int, established_: bool) -> tuple[float, float]:
    """(sync off, sync on) packets/s: established flows (``established_``) or first packets."""
    import passnat
    from passnat.ha import sync, wire

    pkts = flows(n)
    best = {False: 0.0, True: 0.0}
    for _ in range(reps):
        for on in (False, True):  # interleaved: both see the same machine
            r = passnat.Router(passnat.parse_config(CONFIG))
            st = sync.SyncState(r)
            enc = wire.Encoder(b"k" * 32, b"C")
            if established_:
                for p in pkts:
                    r.handle("lan0", p, 0.0)
            st.record(on)
            st.discard()
            gc.collect()
            handle, take, frame = r.handle, st.take, enc.message
            t0 = time.perf_counter()
            for i in range(0, n, 512):  # one receive-loop turn, then the sync's share of the loop
                for p in pkts[i:i + 512]:
                    handle("lan0", p, 1.0)
                if on:
                    while (m := take(1.0)) is not None:
                        frame(wire.UPDATE, m)
            best[on] = max(best[on], n / (time.perf_counter() - t0))
    return best[False], best[True]


def ha_sync(n: int, reps: int) -> None:
    import json

    import passnat
    from passnat.ha import sync, wire

    off, on = _sync_rate(n, reps, True)
    print(f"  {'HA sync':24s} established flows: {on:12,.0f} packets/s with sync, {off:,.0f} without: "
          f"{on / off:.0%} (goal >= 90 %)", flush=True)
    off, on = _sync_rate(n, reps, False)
    print(f"  {'HA sync':24s} new sessions:      {on:12,.0f} sessions/s with sync, {off:,.0f} without: "
          f"{on / off:.0%}", flush=True)
    a = passnat.Router(passnat.parse_config(CONFIG))
    for p in flows(n):
        a.handle("lan0", p, 0.0)
    sa = sync.SyncState(a)
    enc = wire.Encoder(b"k" * 32, b"C")
    t0 = time.perf_counter()
    frames = [enc.message(wire.UPDATE, m) for m in sa.bulk_messages(sa.snapshot(), 0.0)]
    t_out = time.perf_counter() - t0
    b = passnat.Router(passnat.parse_config(CONFIG))
    sb = sync.SyncState(b)
    t0 = time.perf_counter()
    sb.apply("bulk_begin", {"now": 0.0, "next_id": 1}, 0.0)
    for fr in frames:
        sb.apply("update", json.loads(fr[wire.HEADER.size:-wire.MAC_LEN]), 0.0)
    sb.apply("bulk_end", {"now": 0.0}, 0.0)
    t_in = time.perf_counter() - t0
    assert len(b.table) == n, len(b.table)
    size = sum(len(f) for f in frames)
    print(f"  {'HA sync':24s} full transfer:     {n / t_out:12,.0f} sessions/s framed by the master, "
          f"{n / t_in:,.0f}/s applied by the backup ({size / n:,.0f} bytes per session on the wire)", flush=True)


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def million(n: int) -> None:
    """A process that holds n sessions: its resident set before and after (printed)."""
    import passnat
    r = passnat.Router(passnat.parse_config(CONFIG))
    base = int.from_bytes(socket.inet_aton("10.0.0.2"), "big")
    remote = int.from_bytes(socket.inet_aton("198.51.0.1"), "big")
    gc.collect()
    rss0 = _rss()
    t0 = time.perf_counter()
    for i in range(n):  # built one by one: the packets themselves are not kept
        r.handle("lan0", packet(17, base + i // 500, remote + i % 500, 1024 + (i // 500) % 60000, 443), 0.0)
    elapsed = time.perf_counter() - t0
    assert len(r.table) == n, len(r.table)
    gc.collect()
    rss1 = _rss()
    print(f"  {'memory':24s} {n:,} sessions:   RSS {rss0 / 2**20:,.0f} -> {rss1 / 2**20:,.0f} MiB, "
          f"{(rss1 - rss0) / n:,.0f} bytes per session (made in {elapsed:.1f} s)", flush=True)


# ------------------------------------------------------------------ baseline comparison


def _prepare_baseline(rev: str, where: Path) -> Path | None:
    """A built checkout of ``rev`` under ``where`` (a detached git worktree), or None."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        print(f"  (no git checkout here: the comparison with {rev} is skipped)")
        return None
    tree = where / "baseline"
    res = subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), rev],
                         capture_output=True, text=True)
    if res.returncode != 0:
        print(f"  (cannot check out {rev}: {res.stderr.strip()}; the comparison is skipped)")
        return None
    res = subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"], cwd=tree,
                         capture_output=True, text=True)
    if res.returncode != 0:
        print(f"  (building {rev}'s C extension failed; its pure-Python figure is used)")
    return tree


def _drop_baseline(tree: Path) -> None:
    subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], capture_output=True)


def _measure_in(tree: Path, n: int) -> float:
    """New sessions/s measured by a child process that imports passnat from ``tree``."""
    code = ("import sys; sys.path.insert(0, sys.argv[1]); sys.path.insert(0, sys.argv[2]); "
            "import engine_bench as eb; print(eb.new_session_rate(int(sys.argv[3])))")
    out = subprocess.run([sys.executable, "-c", code, str(tree), str(ROOT / "bench"), str(n)],
                         capture_output=True, text=True, check=True, env=dict(os.environ, PYTHONPATH=""))
    return float(out.stdout.strip().splitlines()[-1])


def new_sessions(n: int, rounds: int, baseline: str | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tree = _prepare_baseline(baseline, Path(tmp)) if baseline else None
        try:
            ours: list[float] = []
            theirs: list[float] = []
            for _ in range(rounds):  # interleaved, so both see the same machine
                ours.append(_measure_in(ROOT, n))
                if tree is not None:
                    theirs.append(_measure_in(tree, n))
        finally:
            if tree is not None:
                _drop_baseline(tree)
    print(f"  {'new sessions':24s} this revision:    {max(ours):12,.0f} sessions/s  "
          f"(best of {rounds}; {', '.join(f'{x:,.0f}' for x in ours)})", flush=True)
    if theirs:
        print(f"  {'new sessions':24s} {baseline} (baseline): {max(theirs):9,.0f} sessions/s  "
              f"(best of {rounds}; {', '.join(f'{x:,.0f}' for x in theirs)})")
        print(f"  {'new sessions':24s} ratio:            {max(ours) / max(theirs):12.2f} x  "
              f"(goal >= 3 x, issue 9)", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--flows", type=int, default=100_000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3, help="new-session rounds, interleaved with the baseline's")
    ap.add_argument("--baseline", default=BASELINE, help="git revision to compare new sessions with ('' = none)")
    ap.add_argument("--million", type=int, default=1_000_000, help="sessions in the RSS run (0 = skip)")
    ap.add_argument("--no-ha", action="store_true", help="skip the HA session sync figures")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    print(f"passnat engine benchmark: {args.flows:,} flows (TCP+UDP, {args.flows // 100:,} inside endpoints "
          f"x 100 remotes); load average {load}", flush=True)
    established(args.flows, args.reps)
    new_sessions(args.flows, args.rounds, args.baseline or None)
    memory(args.flows)
    if args.million:
        million(args.million)
    if not args.no_ha:
        ha_sync(args.flows, args.reps)


if __name__ == "__main__":
    main()
