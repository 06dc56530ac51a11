"""iperf3 TCP throughput through the router: pc1 -> srv1, one stream (the report's last line).

The hosts' veths have TSO/GSO/GRO off (``topology``), so both routers see
every 1500-byte frame: the kernel figure is a like-for-like reference.
The two runs should be taken back to back (numbers on a shared 2-core
machine are noisy; ``load`` records the load average next to them).
"""
from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass

from passnat.lab.lab import Lab
from passnat.lab.proc import LabError
from passnat.lab.topology import HOSTS

PORT = 5201


@dataclass
class Throughput:
    router: str
    bits_per_second: float
    retransmits: int | None
    seconds: float
    load: str
    error: str | None = None

    def text(self) -> str:
        if self.error:
            return f"{self.router}: failed ({self.error})"
        return f"{self.router}: {self.bits_per_second / 1e9:.2f} Gbit/s"


def iperf_tcp(lab: Lab, seconds: float = 5.0) -> Throughput:
    if shutil.which("iperf3") is None:
        raise LabError("iperf3 missing: run `make deps`")
    router = lab.router.name if lab.router else "?"
    srv1 = HOSTS["srv1"].addr
    server = lab.spawn("iperf3-server", "srv1", ["iperf3", "-s", "-1", "-B", srv1, "-p", str(PORT)])
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    try:
        for _ in range(50):
            if lab.run_in("srv1", ["ss", "-Htln", f"sport = :{PORT}"], check=False).stdout.strip():
                break
            time.sleep(0.1)
        cp = lab.run_in("pc1", ["iperf3", "-c", srv1, "-p", str(PORT), "-t", str(seconds), "-J"],
                        check=False, timeout=seconds + 30)
    finally:
        lab.forget(server)
    try:
        data = json.loads(cp.stdout)
        end = data["end"]
        return Throughput(router, float(end["sum_received"]["bits_per_second"]),
                          end["sum_sent"].get("retransmits"), seconds, load)
    except (ValueError, KeyError) as e:
        err = (cp.stdout + cp.stderr).strip().splitlines()
        return Throughput(router, 0.0, None, seconds, load, error=(err[-1] if err else repr(e))[:120])
