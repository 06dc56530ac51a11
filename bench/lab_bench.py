"""make bench-lab: passnat against the kernel's own NAT, side by side, with the method of
shared/reference/perf-anchors.md B.2.

Topology (tests/io/netlab.py): pc 192.168.0.11 -- bridge -- router (lan0|lan1) -- srv 203.0.113.10.
The router namespace runs, in turn, round after round (passnat, kernel, passnat, kernel, ...):

  * passnat: ``taskset -c 1 passnat run --prepare`` on lan0/lan1 (no kernel addresses);
  * kernel:  addresses on lan0/lan1, ip_forward=1, nftables ``oifname "lan1" masquerade``.

CPU placement (B.2 "rps"): the sender alone on CPU0; all router work on CPU1: RPS steers
the receive queues of lan0, lan1 and of the sink (srv's eth0) to CPU1 and passnat is pinned
there, so the kernel NAT runs in softirq on CPU1 and passnat shares CPU1 with the kernel's
receive work for it.  The sender and passnat run at nice -10 (``--sender-nice``,
``--router-nice``): other work on the shared machine disturbs them less, as the kernel NAT
in softirq runs ahead of every process anyway.

Sender: bench/pktgen.c (compiled here with gcc into build/bench/): AF_PACKET raw frames with
PACKET_QDISC_BYPASS and sendmmsg, complete checksums, paced or unpaced, from 1000 inside
endpoints (192.168.0.100-109, ports 10000-10099) to srv.  Sink: an nftables netdev ingress
chain on srv's eth0 that counts every UDP frame, separately those whose source is the
router's WAN address (translation checked on every trial), and drops them.

Modes (``--modes``, default all):
  udp64     60-byte frames, 1000 established flows: best rate with < 1 % loss (paced search);
  udp1442   1442-byte frames, 1000 flows: the same;
  newflows  60-byte frames, a new 5-tuple per packet (each endpoint to a new srv port): the
            same, in new sessions per second; sessions are flushed before every trial and a
            trial stops after 75 % of the smaller table (passnat's ``nat session maximum``,
            set to 262144 here, and the kernel's nf_conntrack_max), so nothing fills;
  overload  60-byte flows offered at 2x the router's best and unpaced: delivered as a fraction
            of its best; for passnat also the worst control-socket answer time during it
            (``counters`` every 200 ms), its CPU use in the two seconds after, and whether half
            the best rate is lossless again;
  tcp       iperf3, 1 stream, TSO/GSO/GRO off, both ends on CPU0;
  latency   ping every 50 ms pc -> srv through the router: p50 and p90.

A benchmark, not a test: no pass/fail, but it stops with an error when a mode does not work
(nothing arrives at the sink, or frames arrive untranslated).  Other work on the machine
changes the figures: the load average is printed before each run.  Only ratios measured in
the same run mean anything.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from labsearch import LOSS_LIMIT, Search, Trial, percentile, ratios, search_best, summarize  # noqa: E402

from passnat.control.client import ClientError, request  # noqa: E402
from tests.io.netlab import ROUTER_LAN, ROUTER_WAN, SRV, NetLab, Proc  # noqa: E402

PKTGEN_SRC = ROOT / "bench" / "pktgen.c"
BUILD = ROOT / "build" / "bench"

FLOW_SRC, NSRC, SPORT, ENDPOINTS, DPORT = "192.168.0.100", 10, 10000, 1000, 9
PASSNAT_SESSION_MAX = 262144
TABLE_FILL = 0.75  # a new-flows trial sends at most this share of the smaller session table

PACKET_MODES: dict[str, tuple[int, str, float]] = {
    # name: (frame bytes without FCS, pktgen mode, first rate of the search without a hint)
    "udp64": (60, "flows", 50_000.0),
    "udp1442": (1442, "flows", 50_000.0),
    "newflows": (60, "newflows", 10_000.0),
}
ALL_MODES = ("latency", "tcp", "udp64", "udp1442", "newflows", "overload")
KINDS = ("passnat", "kernel")

CONFIG = f"""\
interface lan0 add {ROUTER_LAN}/24
interface lan1 add {ROUTER_WAN}/24
nat napt add private 192.168.0.0-192.168.0.255 interface lan1
nat session maximum {PASSNAT_SESSION_MAX}
"""

KERNEL_NFT = """\
table ip pnbench {
    chain post { type nat hook postrouting priority srcnat; oifname "lan1" masquerade; }
}
"""

SINK_NFT = f"""\
table netdev pnsink {{
    counter all_udp {{ }}
    counter from_wan {{ }}
    chain in {{
        type filter hook ingress device "eth0" priority 0; policy accept;
        ip protocol udp ip saddr {ROUTER_WAN} counter name "from_wan"
        ip protocol udp counter name "all_udp" drop
    }}
}}
"""


class BenchError(RuntimeError):
    """A mode did not work: the run stops with this message."""


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def load() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def build_pktgen() -> Path:
    """Compile bench/pktgen.c (again when the source is newer) into build/bench/pktgen."""
    exe = BUILD / "pktgen"
    if exe.exists() and exe.stat().st_mtime >= PKTGEN_SRC.stat().st_mtime:
        return exe
    BUILD.mkdir(parents=True, exist_ok=True)
    cmd = ["gcc", "-O2", "-Wall", "-Wextra", "-o", str(exe), str(PKTGEN_SRC)]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise BenchError(f"{' '.join(cmd)} failed:\n{res.stderr}")
    return exe


def backlog_drops() -> int:
    """Frames dropped at a full per-CPU input queue (netdev_max_backlog), all CPUs, since boot:
    /proc/net/softnet_stat's second column (the whole machine, not only this lab)."""
    with open("/proc/net/softnet_stat") as f:
        return sum(int(line.split()[1], 16) for line in f if line.strip())


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads) from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuAfter:
    """A thread that reads a process's CPU time when started and 1 s and 2 s later:
    the CPU it used in the first and in the second second (fractions of one CPU)."""

    def __init__(self, pid: int):
        self.pid = pid
        self.samples: list[float] = []
        self._thread = threading.Thread(target=self._run, name="cpu-after", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        t0 = time.monotonic()
        for k in range(3):
            time.sleep(max(0.0, t0 + k - time.monotonic()))
            try:
                self.samples.append(proc_cpu_seconds(self.pid))
            except OSError:  # the process is gone
                return

    def result(self) -> tuple[float | None, float | None]:
        self._thread.join(5)
        s = self.samples
        return (s[1] - s[0] if len(s) > 1 else None, s[2] - s[1] if len(s) > 2 else None)


class ControlProbe:
    """A thread that sends one request to passnat's control socket every ``interval``
    seconds and keeps the worst answer time (a request that fails counts as failed)."""

    def __init__(self, path: str, interval: float = 0.2, timeout: float = 5.0):
        self.path, self.interval, self.timeout = path, interval, timeout
        self.times: list[float] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="control-probe", daemon=True)

    def __enter__(self) -> ControlProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(self.timeout + 1)

    def _run(self) -> None:
        while not self._stop.is_set():
            t0 = time.monotonic()
            try:
                request(self.path, "counters", timeout=self.timeout)
                self.times.append(time.monotonic() - t0)
            except ClientError as e:
                self.failures.append(e.message)
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - t0)))

    def result(self) -> dict[str, Any]:
        return {"requests": len(self.times) + len(self.failures), "failed": len(self.failures),
                "worst_s": max(self.times) if self.times else None,
                "failures": self.failures[:3]}


class Bench:
    def __init__(self, work: Path, args: argparse.Namespace, pktgen: Path):
        self.work = work
        self.args = args
        self.pktgen = pktgen
        self.lab = NetLab("bench", work)
        self.kind: str | None = None
        self.passnat: Proc | None = None
        self.passnat_pid = 0
        self.ctl = str(work / "ctl.sock")
        self.next_index = 0  # newflows: where the 5-tuple sequence continues
        self.newflows_cap = 0
        self.pc_mac = self.r_mac = ""

    # ------------------------------------------------------------ the lab

    def setup(self) -> None:
        lab = self.lab
        lab.build_direct_lab()
        for i in ("lan0", "lan1"):
            lab.offloads("r", i, tso=False)
        mask = 1 << self.args.router_cpu
        for ns, i in (("r", "lan0"), ("r", "lan1"), ("srv", "eth0")):
            lab.rps(ns, i, mask)
        self.pc_mac, self.r_mac = lab.mac("pc", "eth0"), lab.mac("r", "lan0")
        sink = self.work / "sink.nft"
        sink.write_text(SINK_NFT)
        lab.exec("srv", "nft", "-f", str(sink))
        ct_max = int(lab.exec("r", "sysctl", "-n", "net.netfilter.nf_conntrack_max").stdout.strip() or 0)
        limits = [PASSNAT_SESSION_MAX] + ([ct_max] if ct_max > 0 else [])
        self.newflows_cap = int(min(limits) * TABLE_FILL)

    def start(self, kind: str) -> None:
        self.kind = kind
        self.next_index = 0
        if kind == "passnat":
            self.start_passnat()
        else:
            self.start_kernel()

    def stop(self) -> None:
        if self.kind is None:
            return
        if self.kind == "passnat":
            self.stop_passnat()
        elif self.kind == "kernel":
            self.stop_kernel()
        for h in ("pc", "srv"):  # every run starts with empty neighbour caches
            self.lab.exec(h, "ip", "neigh", "flush", "all", check=False)
        self.kind = None

    def start_passnat(self) -> None:
        conf = self.work / "router.conf"
        conf.write_text(CONFIG)
        self.passnat = self.lab.spawn("r", [*self.router_priority(), "taskset", "-c", str(self.args.router_cpu),
                                            sys.executable, "-m", "passnat", "run",
                                            "--config", str(conf), "--control", self.ctl, "--log-level", "warning",
                                            "--prepare", *self.args.passnat_arg],
                                      stderr_path=self.work / "passnat.log")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if not self.passnat.alive():
                raise BenchError(f"passnat exited: {self.passnat_log()}")
            try:
                self.passnat_pid = int(request(self.ctl, "ping", timeout=2)["pid"])
                return
            except ClientError:
                time.sleep(0.1)
        raise BenchError(f"passnat did not start: {self.passnat_log()}")

    def router_priority(self) -> list[str]:
        """The command prefix that sets passnat's scheduling: nice, or SCHED_FIFO (``--router-fifo``)."""
        if self.args.router_fifo:
            return ["chrt", "-f", str(self.args.router_fifo)]
        return ["nice", "-n", str(self.args.router_nice)]

    def passnat_log(self) -> str:
        path = self.work / "passnat.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-20:]) if path.exists() else ""

    def stop_passnat(self) -> None:
        if self.passnat is not None:
            self.passnat.stop()
            self.passnat = None

    def start_kernel(self) -> None:
        ex = self.lab.exec
        ex("r", "ip", "addr", "add", f"{ROUTER_LAN}/24", "dev", "lan0")
        ex("r", "ip", "addr", "add", f"{ROUTER_WAN}/24", "dev", "lan1")
        ex("r", "sysctl", "-qw", "net.ipv4.ip_forward=1")
        path = self.work / "kernel.nft"
        path.write_text(KERNEL_NFT)
        ex("r", "nft", "-f", str(path))
        ex("r", "conntrack", "-F", check=False)

    def stop_kernel(self) -> None:
        ex = self.lab.exec
        ex("r", "nft", "delete", "table", "ip", "pnbench", check=False)
        ex("r", "sysctl", "-qw", "net.ipv4.ip_forward=0")
        ex("r", "ip", "addr", "flush", "dev", "lan0")
        ex("r", "ip", "addr", "flush", "dev", "lan1")
        ex("r", "conntrack", "-F", check=False)

    def flush_sessions(self) -> None:
        if self.kind == "passnat":
            request(self.ctl, "clear_nat", timeout=120, id=None)
        else:
            self.lab.exec("r", "conntrack", "-F", check=False, timeout=120)

    def close(self) -> None:
        self.stop_passnat()
        self.lab.close()

    # ------------------------------------------------------------ sender and sink

    def sink(self) -> tuple[int, int]:
        """(UDP frames, of which from the router's WAN address) counted at srv so far."""
        res = self.lab.exec("srv", "nft", "-j", "list", "counters", "table", "netdev", "pnsink")
        counts = {}
        for item in json.loads(res.stdout)["nftables"]:
            c = item.get("counter")
            if c:
                counts[c["name"]] = int(c["packets"])
        return counts["all_udp"], counts["from_wan"]

    def settle(self, timeout: float = 5.0) -> tuple[int, int]:
        """The sink's counters once nothing more arrives (queues drained)."""
        last = self.sink()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            time.sleep(0.15)
            now = self.sink()
            if now == last:
                return now
            last = now
        return last

    def send(self, size: int, mode: str, rate: float | None, *, seconds: float = 0, count: int = 0) -> dict[str, Any]:
        # the sender is the measuring instrument: at nice -10 other work on its CPU slows it less
        argv = ["nice", "-n", str(self.args.sender_nice), "taskset", "-c", str(self.args.sender_cpu), str(self.pktgen),
                "--ifname", "eth0",
                "--smac", self.pc_mac, "--dmac", self.r_mac, "--src", FLOW_SRC, "--nsrc", str(NSRC),
                "--sport", str(SPORT), "--endpoints", str(ENDPOINTS), "--dst", SRV, "--dport", str(DPORT),
                "--size", str(size), "--mode", mode, "--rate", f"{rate or 0:.0f}"]
        if seconds:
            argv += ["--seconds", f"{seconds:g}"]
        if count:
            argv += ["--count", str(count)]
        if mode == "newflows":
            argv += ["--start", str(self.next_index)]
        wait = (seconds or 0) + (count / rate if rate and count else 0) + 60
        gen = self.lab.spawn("pc", argv)
        try:
            res: dict[str, Any] = gen.result(timeout=wait)
        finally:
            gen.stop()
            self.lab.procs.remove(gen)
        if mode == "newflows":
            self.next_index = int(res["next"])
        return res

    def trial(self, size: int, mode: str, rate: float | None, *, seconds: float | None = None, count: int = 0,
              on_end: Callable[[], None] | None = None) -> Trial:
        """One sender run and the sink's counts; raises when frames arrive untranslated."""
        if mode == "newflows":
            self.flush_sessions()
            count = min(count, self.newflows_cap) if count else self.newflows_cap
        secs = self.args.seconds if seconds is None else seconds
        u0, x0 = self.settle()
        d0 = backlog_drops()
        res = self.send(size, mode, rate, seconds=secs, count=count)
        u1, _ = self.sink()
        if on_end is not None:
            on_end()
        u2, x2 = self.settle()
        t = Trial(rate, int(res["sent"]), float(res["seconds"]), u1 - u0, u2 - u0, x2 - x0, backlog_drops() - d0)
        if t.total != t.translated:
            raise BenchError(f"{self.kind} {mode} {size} B: {t.total - t.translated} of {t.total} frames arrived at the sink "
                             f"with a source other than the router's WAN address {ROUTER_WAN}")
        what = "unpaced" if rate is None else f"paced {rate:,.0f} pps"
        log(f"    {what}: offered {t.offered_pps:,.0f} pps over {t.seconds:.2f} s, delivered {t.delivered_pps:,.0f} pps, "
            f"loss {t.loss:.2%}" + (f" ({t.backlog_drops:,} dropped at full CPU input queues)" if t.backlog_drops else ""))
        return t

    def warm(self, size: int, mode: str) -> None:
        """Create the flows (and resolve the next hop), then check that the mode works: a
        light second pass must arrive (at least half of it), translated."""
        rate = 2000.0 if mode == "newflows" else 10000.0
        self.trial(size, mode, rate, seconds=0, count=ENDPOINTS)
        time.sleep(0.3)
        t = self.trial(size, mode, rate, seconds=0, count=2 * ENDPOINTS)
        if t.total == 0:
            raise BenchError(f"{self.kind} {mode} {size} B: nothing arrived at the sink ({t.sent} frames sent at {rate:,.0f} pps)")
        if t.loss > 0.5:
            raise BenchError(f"{self.kind} {mode} {size} B: only {t.total} of {t.sent} frames arrived at {rate:,.0f} pps")

    # ------------------------------------------------------------ figures

    def best(self, name: str, hint: float | None) -> Search:
        size, mode, start = PACKET_MODES[name]
        self.warm(size, mode)
        s = search_best(lambda rate: self.trial(size, mode, rate), steps=self.args.steps, start=start, hint=hint)
        if s.best_pps <= 0:
            raise BenchError(f"{self.kind} {name}: no rate had < {LOSS_LIMIT:.0%} loss "
                             f"(lowest tried {min(t.rate or math.inf for t in s.trials):,.0f} pps)")
        return s

    def overload(self, best: float) -> dict[str, Any]:
        size, mode, _ = PACKET_MODES["udp64"]
        self.warm(size, mode)
        out: dict[str, Any] = {"best_pps": best}
        cpu = CpuAfter(self.passnat_pid) if self.kind == "passnat" else None

        probe = ControlProbe(self.ctl) if self.kind == "passnat" else None
        if probe:
            probe.__enter__()
        try:
            t2 = self.trial(size, mode, 2 * best)
            tu = self.trial(size, mode, None, on_end=cpu.start if cpu else None)
        finally:
            if probe:
                probe.__exit__()
        out["twice"] = t2.as_dict()
        out["twice_fraction"] = t2.delivered_pps / best
        out["unpaced"] = tu.as_dict()
        out["unpaced_fraction"] = tu.delivered_pps / best
        if probe:
            out["control"] = probe.result()
        if cpu:  # CPU use in the first and the second second after the sender stopped
            out["cpu_0_1"], out["cpu_1_2"] = cpu.result()
        th = self.trial(size, mode, best / 2)
        out["half"] = th.as_dict()
        out["half_loss"] = th.loss
        return out

    def tcp(self) -> float:
        """iperf3, 1 stream: the receiver's rate in Gbit/s."""
        cpu = ["taskset", "-c", str(self.args.sender_cpu)]
        server = self.lab.spawn("srv", [*cpu, "iperf3", "-s", "-1", "-B", SRV])
        deadline = time.monotonic() + 5
        while ":5201" not in self.lab.exec("srv", "ss", "-ltn", check=False).stdout:
            if time.monotonic() > deadline:
                raise BenchError("iperf3 server did not start")
            time.sleep(0.05)
        secs = self.args.tcp_seconds
        try:
            res = self.lab.exec("pc", *cpu, "iperf3", "-c", SRV, "-t", str(secs), "-J", check=False, timeout=secs + 60)
        except subprocess.TimeoutExpired:
            raise BenchError("iperf3 did not finish") from None
        finally:
            server.stop(5)
        try:
            data = json.loads(res.stdout)
        except ValueError:
            raise BenchError(f"iperf3 output unreadable: {res.stdout[-500:]} {res.stderr[-500:]}") from None
        if "error" in data:
            raise BenchError(f"{self.kind} TCP: iperf3: {data['error']}")
        return float(data["end"]["sum_received"]["bits_per_second"]) / 1e9

    def latency(self) -> dict[str, Any]:
        n = self.args.pings
        res = self.lab.exec("pc", "ping", "-n", "-i", "0.05", "-c", str(n), "-W", "1", SRV, check=False,
                            timeout=n * 0.05 + 30)
        rtts = [float(m) for m in re.findall(r"time=([\d.]+) ms", res.stdout)]
        if not rtts:
            raise BenchError(f"{self.kind} latency: no ping reply from {SRV}: {res.stdout[-300:]} {res.stderr[-300:]}")
        return {"p50_ms": percentile(rtts, 50), "p90_ms": percentile(rtts, 90), "sent": n, "received": len(rtts)}


# ---------------------------------------------------------------- one router run


def run_router(b: Bench, kind: str, modes: list[str], hints: dict[str, float]) -> dict[str, Any]:
    """Every selected figure for one router; ``hints``: best rates of earlier rounds.

    The router is started afresh for each packet mode and for the overload (passnat: a new
    process; kernel: a flushed conntrack table), so that no mode inherits another's aftermath."""
    out: dict[str, Any] = {}

    def fresh(what: str) -> None:
        b.stop()
        log(f"  {kind} {what}: load average {load()}")
        b.start(kind)

    try:
        if "latency" in modes:
            fresh("latency")
            out["latency"] = lat = b.latency()
            log(f"    ping every 50 ms: p50 {lat['p50_ms']:.3f} ms, p90 {lat['p90_ms']:.3f} ms, "
                f"{lat['received']}/{lat['sent']} answered")
        if "tcp" in modes:
            fresh("TCP")
            out["tcp_gbps"] = b.tcp()
            log(f"    TCP 1 stream: {out['tcp_gbps']:.2f} Gbit/s")
        need = [m for m in PACKET_MODES if m in modes or (m == "udp64" and "overload" in modes)]
        for name in need:
            fresh(name)
            s = b.best(name, hints.get(name))
            out[name] = s.as_dict()
            hints[name] = s.best_pps
            bound = {"sender": " (no run failed: the sender's limit)", "steps": " (no run failed within --steps)"}
            log(f"    best with < 1 % loss: {s.best_pps:,.0f} pps" + bound.get(s.lower_bound, ""))
        if "overload" in modes:
            fresh("overload")
            o = out["overload"] = b.overload(out["udp64"]["best_pps"])
            msg = (f"    2x best: {o['twice_fraction']:.0%} of best delivered; unpaced "
                   f"(offered {o['unpaced']['offered_pps']:,.0f} pps): {o['unpaced_fraction']:.0%}; "
                   f"half best afterwards: loss {o['half_loss']:.2%}")
            if "control" in o:
                c = o["control"]
                worst = "none answered" if c["worst_s"] is None else f"{c['worst_s'] * 1000:.0f} ms"
                msg += f"; control socket worst {worst} ({c['failed']} of {c['requests']} failed)"
            if o.get("cpu_1_2") is not None:
                msg += f"; CPU after: {o['cpu_0_1']:.0%}, then {o['cpu_1_2']:.0%}"
            log(msg)
    finally:
        b.stop()
    return out


# ---------------------------------------------------------------- report


def pick(rounds: list[dict[str, Any]], kind: str, path: str) -> list[float | None]:
    out: list[float | None] = []
    for r in rounds:
        v: Any = r.get(kind, {})
        for k in path.split("."):
            v = v.get(k) if isinstance(v, dict) else None
        out.append(float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None)
    return out


ROWS: list[tuple[str, str, str, bool]] = [
    # label, path into a router's results, format, print the passnat/kernel ratio
    ("UDP 60 B, 1000 flows: best < 1 % loss (pps)", "udp64.best_pps", "pps", True),
    ("  highest delivered, any loss (pps)", "udp64.peak_pps", "pps", True),
    ("UDP 1442 B, 1000 flows: best < 1 % loss (pps)", "udp1442.best_pps", "pps", True),
    ("  the same in Gbit/s (L2 frames)", "udp1442.gbps", "f2", True),
    ("  highest delivered, any loss (pps)", "udp1442.peak_pps", "pps", True),
    ("new 5-tuple per packet: best (sessions/s)", "newflows.best_pps", "pps", True),
    ("  highest delivered, any loss (pps)", "newflows.peak_pps", "pps", True),
    ("overload, 60 B: 2x the best offered (pps)", "overload.twice.offered_pps", "pps", False),
    ("  delivered (pps)", "overload.twice.delivered_pps", "pps", True),
    ("  delivered / the router's own best", "overload.twice_fraction", "pct", False),
    ("overload, unpaced: offered (pps)", "overload.unpaced.offered_pps", "pps", False),
    ("  delivered (pps)", "overload.unpaced.delivered_pps", "pps", True),
    ("  delivered / the router's own best", "overload.unpaced_fraction", "pct", False),
    ("  control socket, worst answer (ms)", "overload.control_worst_ms", "f0", False),
    ("  CPU 0-1 s after the overload", "overload.cpu_0_1", "pct", False),
    ("  CPU 1-2 s after the overload", "overload.cpu_1_2", "pct", False),
    ("  then half the best rate: loss", "overload.half_loss", "pct2", False),
    ("TCP 1 stream, offloads off (Gbit/s)", "tcp_gbps", "f2", True),
    ("ping every 50 ms: p50 (ms)", "latency.p50_ms", "f3", True),
    ("ping every 50 ms: p90 (ms)", "latency.p90_ms", "f3", True),
]


def derive(res: dict[str, Any]) -> None:
    """Figures computed from others, so that ROWS can name them by path."""
    for kind in KINDS:
        r = res.get(kind, {})
        if "udp1442" in r:
            r["udp1442"]["gbps"] = r["udp1442"]["best_pps"] * 1442 * 8 / 1e9
        c = r.get("overload", {}).get("control")
        if c and c.get("worst_s") is not None:
            r["overload"]["control_worst_ms"] = c["worst_s"] * 1000


def fmt(v: float, how: str) -> str:
    if how == "pps":
        return f"{v:,.0f}"
    if how == "pct":
        return f"{v:.0%}"
    if how == "pct2":
        return f"{v:.2%}"
    return f"{v:.{int(how[1:])}f}"


def cell(values: list[float | None], how: str) -> str:
    s = summarize(values)
    if s is None:
        return ""
    if s.n == 1:
        return fmt(s.median, how)
    return f"{fmt(s.median, how)} [{fmt(s.low, how)}..{fmt(s.high, how)}]"


def report(rounds: list[dict[str, Any]], args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    lines = [f"bench-lab: {len(rounds)} round(s), passnat and the kernel NAT interleaved; {args.seconds:g} s trials; "
             f"medians [min..max]; ratio = passnat / kernel per round; load average now {load()}",
             f"{'':46} {'passnat':>28} {'kernel NAT':>28} {'ratio':>18}"]
    summary: dict[str, Any] = {}
    for label, path, how, ratio in ROWS:
        p, k = pick(rounds, "passnat", path), pick(rounds, "kernel", path)
        if all(v is None for v in p + k):
            continue
        rc = cell(ratios(p, k), "f2") if ratio else ""
        lines.append(f"{label:46} {cell(p, how):>28} {cell(k, how):>28} {rc:>18}")
        summary[path] = {"passnat": (s.as_dict() if (s := summarize(p)) else None),
                         "kernel": (s.as_dict() if (s := summarize(k)) else None),
                         "ratio": (s.as_dict() if ratio and (s := summarize(ratios(p, k))) else None)}
    bounds = {"sender": "the sender's limit", "steps": "ran out of --steps"}
    limited = [f"{kind} {name} round {i + 1} ({bounds[b]})" for i, r in enumerate(rounds) for kind in KINDS for name in PACKET_MODES
               if (b := r.get(kind, {}).get(name, {}).get("lower_bound"))]
    if limited:
        lines.append("lower bounds (no run lost 1 % or more; the router's best is at least the figure): " + ", ".join(limited))
    fails = [(kind, r[kind]["overload"]["control"]) for r in rounds for kind in ("passnat",)
             if r.get(kind, {}).get("overload", {}).get("control", {}).get("failed")]
    for kind, c in fails:
        lines.append(f"{kind}: {c['failed']} of {c['requests']} control requests failed during overload: {c['failures']}")
    return "\n".join(lines), summary


# ---------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modes", default=",".join(ALL_MODES),
                    help=f"comma-separated subset of {','.join(ALL_MODES)} (default all)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    ap.add_argument("--seconds", type=float, default=2.0, help="duration of each sender run (default 2)")
    ap.add_argument("--steps", type=int, default=6, help="paced runs per search after the unpaced one (default 6)")
    ap.add_argument("--tcp-seconds", type=int, default=10, help="iperf3 duration (default 10)")
    ap.add_argument("--pings", type=int, default=200, help="pings per latency run (default 200)")
    ap.add_argument("--sender-cpu", type=int, default=0)
    ap.add_argument("--router-cpu", type=int, default=1)
    ap.add_argument("--sender-nice", type=int, default=-10, help="the sender's nice value (default -10)")
    ap.add_argument("--router-nice", type=int, default=-10,
                    help="passnat's nice value (default -10; the kernel NAT runs in softirq, ahead of every process)")
    ap.add_argument("--router-fifo", type=int, default=0, metavar="PRIO",
                    help="run passnat SCHED_FIFO at this priority (chrt -f) instead of at --router-nice")
    ap.add_argument("--passnat-arg", action="append", default=[], metavar="ARG",
                    help="one more argument for passnat run (repeatable), e.g. --passnat-arg=--no-shed")
    ap.add_argument("--json", metavar="FILE", help="also write every figure (and every trial) as JSON")
    args = ap.parse_args()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    bad = [m for m in modes if m not in ALL_MODES]
    if bad or not modes:
        ap.error(f"unknown mode(s) {', '.join(bad)}; choose from {', '.join(ALL_MODES)}")
    if os.geteuid() != 0:
        print("bench-lab needs root (network namespaces)", file=sys.stderr)
        return 1
    cpus = os.sched_getaffinity(0)
    if args.sender_cpu == args.router_cpu or not {args.sender_cpu, args.router_cpu} <= cpus:
        print(f"bench-lab needs two distinct CPUs for the sender and the router (have {sorted(cpus)})", file=sys.stderr)
        return 1

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)  # also when started with SIGINT ignored (a background job)
    rounds: list[dict[str, Any]] = []
    hints: dict[str, dict[str, float]] = {k: {} for k in KINDS}
    try:
        pktgen = build_pktgen()
        with tempfile.TemporaryDirectory(prefix="pnbench-") as tmp:
            b = Bench(Path(tmp), args, pktgen)
            try:
                b.setup()
                for rnd in range(args.rounds):
                    res: dict[str, Any] = {}
                    for kind in KINDS:
                        log(f"round {rnd + 1}/{args.rounds} {kind}: load average {load()}")
                        res[kind] = run_router(b, kind, modes, hints[kind])
                    rounds.append(res)
            finally:
                b.close()
    except (BenchError, RuntimeError, AssertionError) as e:  # netlab and Proc raise the last two
        print(f"bench-lab: FAILED: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bench-lab: interrupted; everything it started is stopped and its namespaces deleted", file=sys.stderr)
        return 130
    raw = json.loads(json.dumps(rounds))
    for r in rounds:
        derive(r)
    text, summary = report(rounds, args)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "summary": summary, "rounds": raw}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
