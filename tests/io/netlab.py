"""Network namespaces for the daemon's integration tests (and bench/lab_bench.py).

``NetLab`` builds, with names unique to this process (``pn<pid>-<tag>-...``):

    pc  192.168.0.11 ─┐
                       sw (bridge) ── lan0  r  lan1 ── srv 203.0.113.10
    ls  192.168.0.50 ─┘              (passnat; no kernel addresses)

Every host route goes via the router; ``srv`` has no route to 192.168.0.0/24,
so anything leaking un-NATed gets no answer.  IPv6 is off.  Traffic only ever
goes to addresses inside these namespaces.  ``close()`` kills every process
it started (by pid) and deletes every namespace it made, also after failures.

``Proc`` wraps one process started in a namespace: wait for a line, read its
JSON result, stop it by pid.
"""
from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

PEER = str(Path(__file__).with_name("peer.py"))

LAN_NET = "192.168.0.0/24"
ROUTER_LAN, ROUTER_WAN = "192.168.0.1", "203.0.113.1"
PC, LS, SRV = "192.168.0.11", "192.168.0.50", "203.0.113.10"


def sh(*argv: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)
    if check and res.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({res.returncode}): {res.stderr.strip()}")
    return res


class Proc:
    def __init__(self, ns: str, argv: list[str], *, stderr_path: Path | None = None, env: dict[str, str] | None = None):
        self.argv = argv
        self.stderr_path = stderr_path
        err: Any = open(stderr_path, "ab") if stderr_path else subprocess.PIPE  # noqa: SIM115 (closed after Popen)
        self.popen = subprocess.Popen(["ip", "netns", "exec", ns, *argv], stdin=subprocess.DEVNULL,
                                      stdout=subprocess.PIPE, stderr=err, env=env)
        if stderr_path:
            err.close()
        self.lines: list[str] = []
        self._buf = b""

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def _read(self, timeout: float) -> bool:
        assert self.popen.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(self.popen.stdout, selectors.EVENT_READ)
        try:
            if not sel.select(timeout):
                return False
        finally:
            sel.close()
        chunk = os.read(self.popen.stdout.fileno(), 65536)
        if not chunk:
            return False
        self._buf += chunk
        *done, self._buf = self._buf.split(b"\n")
        self.lines.extend(d.decode(errors="replace") for d in done)
        return True

    def wait_line(self, text: str, timeout: float = 15.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            for line in self.lines:
                if text in line:
                    return line
            left = deadline - time.monotonic()
            if left <= 0 or (not self._read(left) and not self.alive()):
                raise AssertionError(f"{self.argv}: no line with {text!r} within {timeout} s; got {self.lines}"
                                     f"{self.stderr_tail()}")

    def result(self, timeout: float = 60.0) -> Any:
        """The JSON object on the process's last output line (it must exit by then)."""
        deadline = time.monotonic() + timeout
        while self.alive() and time.monotonic() < deadline:
            self._read(max(0.0, min(0.5, deadline - time.monotonic())))
        if self.alive():
            self.stop()
            raise AssertionError(f"{self.argv} did not finish within {timeout} s; output {self.lines}")
        while self._read(0):
            pass
        if self._buf:
            self.lines.append(self._buf.decode(errors="replace"))
            self._buf = b""
        for line in reversed(self.lines):
            if line.startswith("{"):
                return json.loads(line)
        raise AssertionError(f"{self.argv} printed no result (rc {self.popen.returncode}); output {self.lines}"
                             f"{self.stderr_tail()}")

    def stderr_tail(self) -> str:
        if self.stderr_path and self.stderr_path.exists():
            return "\nstderr:\n" + "\n".join(self.stderr_path.read_text(errors="replace").splitlines()[-30:])
        if self.popen.stderr is not None and not self.alive():
            return "\nstderr:\n" + self.popen.stderr.read().decode(errors="replace")[-3000:]
        return ""

    def signal(self, sig: int) -> None:
        if self.alive():
            os.kill(self.pid, sig)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; the exit status."""
        if self.alive():
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.popen.wait(5)
        for f in (self.popen.stdout, self.popen.stderr):
            if f is not None:
                f.close()
        return self.popen.returncode


class NetLab:
    def __init__(self, tag: str, workdir: Path):
        self.prefix = f"pn{os.getpid()}-{tag}-"
        self.workdir = workdir
        self.namespaces: list[str] = []
        self.procs: list[Proc] = []

    def ns(self, name: str) -> str:
        return self.prefix + name

    # ------------------------------------------------------------ building

    def add_ns(self, name: str) -> str:
        ns = self.ns(name)
        sh("ip", "netns", "add", ns)
        self.namespaces.append(ns)
        self.exec(name, "ip", "link", "set", "lo", "up")
        self.exec(name, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1")
        self.exec(name, "sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1")
        return ns

    def exec(self, name: str, *argv: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return sh("ip", "netns", "exec", self.ns(name), *argv, check=check, timeout=timeout)

    def veth(self, a: str, a_if: str, b: str, b_if: str) -> None:
        sh("ip", "-n", self.ns(a), "link", "add", "name", a_if, "type", "veth", "peer", "name", b_if,
           "netns", self.ns(b))
        self.exec(a, "ip", "link", "set", a_if, "up")
        self.exec(b, "ip", "link", "set", b_if, "up")

    def host(self, name: str, addr: str, gw: str | None, *, tso: bool = False) -> None:
        self.exec(name, "ip", "addr", "add", addr, "dev", "eth0")
        if gw:
            self.exec(name, "ip", "route", "add", "default", "via", gw)
        self.offloads(name, "eth0", tso=tso)

    def offloads(self, name: str, ifname: str, *, tso: bool) -> None:
        """Segmentation offloads on or off (checksum offload stays on: the virtual-link case)."""
        state = "on" if tso else "off"
        self.exec(name, "ethtool", "-K", ifname, "tso", state, "gso", state, "gro", "off", check=False)

    def mac(self, name: str, ifname: str) -> str:
        """The interface's MAC address."""
        return self.exec(name, "cat", f"/sys/class/net/{ifname}/address").stdout.strip()

    def rps(self, name: str, ifname: str, cpus: int) -> None:
        """Receive packet steering: every receive queue of the interface to the CPUs in the mask."""
        self.exec(name, "sh", "-c", f"for q in /sys/class/net/{ifname}/queues/rx-*/rps_cpus; do echo {cpus:x} > $q; done")

    def build_router_lab(self) -> None:
        for n in ("r", "sw", "pc", "ls", "srv"):
            self.add_ns(n)
        self.exec("sw", "ip", "link", "add", "name", "br0", "type", "bridge")
        self.exec("sw", "ip", "link", "set", "br0", "up")
        self.veth("r", "lan0", "sw", "p0")
        self.veth("pc", "eth0", "sw", "p1")
        self.veth("ls", "eth0", "sw", "p2")
        for p in ("p0", "p1", "p2"):
            self.exec("sw", "ip", "link", "set", p, "master", "br0")
        self.veth("r", "lan1", "srv", "eth0")
        self.exec("r", "sysctl", "-qw", "net.ipv4.ip_forward=0")
        self.host("pc", f"{PC}/24", ROUTER_LAN)
        self.host("ls", f"{LS}/24", ROUTER_LAN)
        self.host("srv", f"{SRV}/24", None)

    def build_direct_lab(self) -> None:
        """pc -- lan0 r lan1 -- srv with direct veth pairs (no bridge, no ls): the same
        addresses and routes as ``build_router_lab``, for bench/lab_bench.py, whose sender
        must not spend its CPU on a bridge."""
        for n in ("r", "pc", "srv"):
            self.add_ns(n)
        self.veth("r", "lan0", "pc", "eth0")
        self.veth("r", "lan1", "srv", "eth0")
        self.exec("r", "sysctl", "-qw", "net.ipv4.ip_forward=0")
        self.host("pc", f"{PC}/24", ROUTER_LAN)
        self.host("srv", f"{SRV}/24", None)

    # ------------------------------------------------------------ processes

    def spawn(self, name: str, argv: list[str], *, stderr_path: Path | None = None) -> Proc:
        p = Proc(self.ns(name), argv, stderr_path=stderr_path)
        self.procs.append(p)
        return p

    def peer(self, name: str, *args: str) -> Proc:
        return self.spawn(name, [sys.executable, PEER, *args])

    def close(self) -> None:
        for p in self.procs:
            try:
                p.stop(5)
            except (OSError, subprocess.SubprocessError):
                pass
        self.procs.clear()
        for ns in reversed(self.namespaces):
            # anything still running in it (started by a process of ours) goes by pid
            res = sh("ip", "netns", "pids", ns, check=False)
            for pid in res.stdout.split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (OSError, ValueError):
                    pass
            sh("ip", "netns", "del", ns, check=False)
        self.namespaces.clear()
