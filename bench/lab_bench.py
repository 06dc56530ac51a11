"""make bench-lab: passnat against the kernel's own NAT on the same namespace topology.

Topology (tests/io/netlab.py): pc 192.168.0.11 -- bridge -- router -- srv 203.0.113.10.
The router namespace runs, in turn and interleaved round by round:

  * passnat: ``passnat run --prepare`` on lan0/lan1 (no kernel addresses, forwarding
    off; --prepare adds the netdev ingress drop that spares the kernel's own
    processing of the frames, docs/daemon.md);
  * kernel:  addresses on lan0/lan1, ip_forward=1, ``nft ... oifname "lan1" masquerade``.

Hosts and router veths have TSO/GSO/GRO off (MTU 1500 frames on the wire, as
``shared/lab/iperf_ref.sh OFFLOAD=off``); checksum offload stays on.

Figures, per mode (median over ``--rounds``):

  TCP     iperf3, 1 stream, ``--seconds`` (default 10), pc -> srv, receiver's rate;
  UDP     iperf3 ``-l 18 -b 0``: 64-byte Ethernet frames, unpaced, delivered packets/s;
  and for passnat only:
  peak    the highest delivered rate over paced rates (steps up from half the unpaced
          figure) and the unpaced run: the rate it can forward (the best rate with
          < 1 % loss is printed too);
  2x      delivered packets/s when offered twice that peak (paced), and its ratio to
          the peak: the overload figure (goal >= 80 %).

Benchmarks print figures; they are not pass/fail tests.  Other work on the
machine changes them: the script prints the load average before each run.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from passnat.control.client import ClientError, request  # noqa: E402
from tests.io.netlab import ROUTER_LAN, ROUTER_WAN, SRV, NetLab, Proc  # noqa: E402

UDP_PAYLOAD = 18  # + 8 UDP + 20 IPv4 + 14 Ethernet = 60 bytes (64 with the FCS)

CONFIG = f"""\
interface lan0 add {ROUTER_LAN}/24
interface lan1 add {ROUTER_WAN}/24
nat napt add private 192.168.0.0-192.168.0.255 interface lan1
"""

KERNEL_NFT = """\
table ip pnbench {
    chain post { type nat hook postrouting priority srcnat; oifname "lan1" masquerade; }
}
"""


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def load() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


class Bench:
    def __init__(self, work: Path, seconds: int):
        self.work = work
        self.seconds = seconds
        self.lab = NetLab("bench", work)
        self.passnat: Proc | None = None
        self.ctl = str(work / "ctl.sock")

    # ------------------------------------------------------------ router modes

    def setup(self) -> None:
        self.lab.build_router_lab()
        for ns, ifs in (("r", ("lan0", "lan1")), ("sw", ("p0", "p1", "p2"))):
            for i in ifs:
                self.lab.offloads(ns, i, tso=False)

    def start_passnat(self) -> None:
        conf = self.work / "router.conf"
        conf.write_text(CONFIG)
        self.passnat = self.lab.spawn("r", [sys.executable, "-m", "passnat", "run", "--config", str(conf),
                                            "--control", self.ctl, "--log-level", "warning", "--prepare"],
                                      stderr_path=self.work / "passnat.log")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if not self.passnat.alive():
                raise RuntimeError(f"passnat exited: {(self.work / 'passnat.log').read_text()}")
            try:
                request(self.ctl, "ping", timeout=2)
                return
            except ClientError:
                time.sleep(0.1)
        raise RuntimeError("passnat did not start")

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
        for h in ("pc", "srv"):  # both modes start with empty neighbour caches
            ex(h, "ip", "neigh", "flush", "all", check=False)

    # ------------------------------------------------------------ iperf3

    def iperf(self, *client_args: str, seconds: int | None = None) -> dict[str, Any]:
        secs = seconds or self.seconds
        server = self.lab.spawn("srv", ["iperf3", "-s", "-1", "-B", SRV])
        deadline = time.monotonic() + 5
        while ":5201" not in self.lab.exec("srv", "ss", "-ltn", check=False).stdout:
            if time.monotonic() > deadline:
                raise RuntimeError("iperf3 server did not start")
            time.sleep(0.05)
        try:
            # under overload iperf3's own control connection (TCP, through the router) loses
            # segments too and its end-of-test exchange can take long: allow for it
            res = self.lab.exec("pc", "iperf3", "-c", SRV, "-t", str(secs), "-J", *client_args, check=False,
                                timeout=secs + 120)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"iperf3 {' '.join(client_args)} did not finish") from None
        finally:
            server.stop(5)
        try:
            data: dict[str, Any] = json.loads(res.stdout)
        except ValueError:
            raise RuntimeError(f"iperf3 output unreadable: {res.stdout[-500:]} {res.stderr[-500:]}") from None
        if "error" in data:
            raise RuntimeError(f"iperf3: {data['error']}")
        return data

    def tcp(self) -> float:
        """Receiver's rate in Gbit/s."""
        return float(self.iperf()["end"]["sum_received"]["bits_per_second"]) / 1e9

    def udp(self, pps: float | None = None, seconds: int | None = None) -> tuple[float, float, float]:
        """(offered pps, delivered pps, loss fraction) with 64-byte frames; pps None: unpaced."""
        rate = "0" if pps is None else str(int(pps * UDP_PAYLOAD * 8))
        d = self.iperf("-u", "-l", str(UDP_PAYLOAD), "-b", rate, seconds=seconds)
        s = d["end"]["sum"]
        dur = float(s["seconds"]) or 1.0
        sent, lost = int(s["packets"]), int(s["lost_packets"])
        return sent / dur, (sent - lost) / dur, (lost / sent if sent else 1.0)

    def ring_drops(self) -> int:
        data = request(self.ctl, "counters")
        return sum(int(i.get("ring_drops", 0)) for i in data["interfaces"].values())

    def close(self) -> None:
        self.stop_passnat()
        self.lab.close()


def peak_and_overload(b: Bench, unpaced: float, seconds: int) -> dict[str, float]:
    """Paced steps up from half the unpaced figure until the loss passes 5 %: the highest
    delivered rate (steps and the unpaced run) is the peak, the best with < 1 % loss the
    lossless rate; then offer twice the peak and see what is delivered."""
    peak, lossless = unpaced, 0.0
    rate = max(10_000.0, unpaced * 0.5)
    for _ in range(6):
        offered, delivered, loss = b.udp(rate, seconds=seconds)
        log(f"    paced {rate:,.0f} pps: offered {offered:,.0f}, delivered {delivered:,.0f}, loss {loss:.1%}")
        peak = max(peak, delivered)
        if loss < 0.01:
            lossless = max(lossless, delivered)
        if loss > 0.05:
            break
        rate *= 1.25
    drops0 = b.ring_drops()
    offered, delivered, loss = b.udp(2 * peak, seconds=b.seconds)
    return {"peak_pps": peak, "lossless_pps": lossless, "overload_offered_pps": offered,
            "overload_delivered_pps": delivered, "overload_ratio": delivered / peak if peak else 0.0,
            "overload_ring_drops": b.ring_drops() - drops0}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=10, help="iperf3 duration of the main runs (default 10)")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds per mode (default 2)")
    ap.add_argument("--step-seconds", type=int, default=4, help="duration of each paced step (default 4)")
    ap.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench-lab needs root (network namespaces)", file=sys.stderr)
        return 1
    results: dict[str, dict[str, list[float]]] = {"passnat": {}, "kernel": {}}
    overload: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="pnbench-") as tmp:
        b = Bench(Path(tmp), args.seconds)
        try:
            b.setup()
            for rnd in range(args.rounds):
                for mode in ("passnat", "kernel"):
                    log(f"round {rnd + 1}/{args.rounds} {mode}: load average {load()}")
                    if mode == "passnat":
                        b.start_passnat()
                    else:
                        b.start_kernel()
                    try:
                        tcp = b.tcp()
                        offered, delivered, loss = b.udp()
                        r = results[mode]
                        r.setdefault("tcp_gbps", []).append(tcp)
                        r.setdefault("udp_offered_pps", []).append(offered)
                        r.setdefault("udp_delivered_pps", []).append(delivered)
                        log(f"  {mode}: TCP {tcp:.2f} Gbit/s; UDP 64 B unpaced: offered {offered:,.0f} pps, "
                            f"delivered {delivered:,.0f} pps (loss {loss:.1%})")
                        if mode == "passnat":
                            o = peak_and_overload(b, delivered, args.step_seconds)
                            overload.append(o)
                            log(f"  passnat: peak {o['peak_pps']:,.0f} pps (< 1 % loss: {o['lossless_pps']:,.0f}); offered 2x "
                                f"({o['overload_offered_pps']:,.0f} pps): delivered "
                                f"{o['overload_delivered_pps']:,.0f} pps = {o['overload_ratio']:.0%} of peak, "
                                f"{o['overload_ring_drops']:,} dropped at the ring")
                    finally:
                        if mode == "passnat":
                            b.stop_passnat()
                        else:
                            b.stop_kernel()
        finally:
            b.close()
    med = {m: {k: statistics.median(v) for k, v in r.items()} for m, r in results.items()}
    ov = {k: statistics.median(o[k] for o in overload) for k in overload[0]} if overload else {}
    p, k = med["passnat"], med["kernel"]
    print(f"bench-lab: {args.rounds} round(s), {args.seconds} s runs, medians; load average now {load()}")
    print(f"{'':34} {'passnat':>14} {'kernel NAT':>14} {'ratio':>8}  goal")
    print(f"{'TCP 1 stream, MTU 1500 (Gbit/s)':34} {p['tcp_gbps']:>14.2f} {k['tcp_gbps']:>14.2f} "
          f"{p['tcp_gbps'] / k['tcp_gbps']:>8.0%}  >= 50%")
    print(f"{'UDP 64-byte frames delivered (pps)':34} {p['udp_delivered_pps']:>14,.0f} "
          f"{k['udp_delivered_pps']:>14,.0f} {p['udp_delivered_pps'] / k['udp_delivered_pps']:>8.0%}  >= 40%")
    print(f"{'  offered by the sender (pps)':34} {p['udp_offered_pps']:>14,.0f} {k['udp_offered_pps']:>14,.0f}")
    if ov:
        print(f"{'passnat peak forwarding rate (pps)':34} {ov['peak_pps']:>14,.0f}")
        print(f"{'passnat best rate with < 1 % loss':34} {ov['lossless_pps']:>14,.0f}")
        print(f"{'passnat at 2x peak offered (pps)':34} {ov['overload_delivered_pps']:>14,.0f} "
              f"{'':>14} {ov['overload_ratio']:>8.0%}  >= 80% of peak")
    if args.json:
        Path(args.json).write_text(json.dumps({"medians": med, "overload": ov, "raw": results,
                                               "overload_raw": overload}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
