"""What runs in the router namespace: passnat (``passnat run``) or the Linux kernel NAT.

Role: a ``RouterBackend`` turns the router namespace into a NAT router for
one ``Variant`` (``apply``), tells what it holds (``status_lines``: passnat's
``show status nat``, the kernel's conntrack table) and gives the namespace
back (``stop``).  Scenarios only talk to this interface, so the same
scenario runs through both columns of the report.

Invariants:
  * passnat mode: the router's interfaces carry **no** kernel IPv4 address
    and ``ip_forward`` is 0, so the kernel neither routes nor answers for
    the router's addresses (docs/lab.md); the daemon owns them over
    AF_PACKET.  It is stopped by its pid.
  * kernel mode: addresses on ``rlan``/``rwan``, ``ip_forward=1``, one nft
    table named after the lab, conntrack flushed on every ``apply``.
  * every ``apply`` starts from a clean slate (new daemon, flushed
    conntrack): no scenario inherits another's sessions.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Protocol

from passnat.lab.proc import LabError, Proc, nsrun, spawn
from passnat.lab.topology import (
    CONFIG_LAN_IF,
    CONFIG_WAN_IF,
    PREFIX_LEN,
    ROUTER_LAN,
    ROUTER_LAN_IF,
    ROUTER_WAN,
    ROUTER_WAN_IF,
)
from passnat.lab.variants import Variant


class RouterBackend(Protocol):
    name: str
    title: str

    def apply(self, variant: Variant) -> None: ...
    def stop(self) -> None: ...
    def status_lines(self) -> list[str]: ...
    def counters(self) -> dict[str, int]: ...
    def describe(self) -> str: ...


def passnat_argv(*args: str) -> list[str]:
    """The passnat command of this installation (the interpreter running the lab)."""
    return [sys.executable, "-m", "passnat", *args]


class PassnatRouter:
    """``passnat run`` in the router namespace, restarted for each variant."""

    name = "passnat"
    title = "passnat"

    def __init__(self, ns: str, run_dir: Path, log_level: str = "info"):
        self.ns = ns
        self.run_dir = run_dir
        self.control = run_dir / "passnat.ctl"
        self.config_path = run_dir / "router.conf"
        self.log = run_dir / "passnat.log"
        self.log_level = log_level
        self.proc: Proc | None = None
        self.variant: Variant | None = None
        self._prepared = False
        #: further ``passnat run`` options (e.g. ``--http 127.0.0.1:9469`` for the status page test)
        self.extra_args: list[str] = []

    def _prepare(self) -> None:
        if self._prepared:
            return
        for itf in (ROUTER_LAN_IF, ROUTER_WAN_IF):
            nsrun(self.ns, ["ip", "addr", "flush", "dev", itf])
            nsrun(self.ns, ["ip", "link", "set", itf, "up"])
        nsrun(self.ns, ["sysctl", "-qw", "net.ipv4.ip_forward=0"])
        self._prepared = True

    def command(self) -> list[str]:
        return passnat_argv("run", "--config", str(self.config_path),
                            "--interface", f"{CONFIG_LAN_IF}={ROUTER_LAN_IF}",
                            "--interface", f"{CONFIG_WAN_IF}={ROUTER_WAN_IF}",
                            "--control", str(self.control), "--log-level", self.log_level, *self.extra_args)

    def apply(self, variant: Variant) -> None:
        self.stop()
        self._prepare()
        self.config_path.write_text(variant.passnat_config())
        with open(self.log, "a") as f:
            f.write(f"==== {time.strftime('%H:%M:%S')} start, variant {variant.label()}\n")
        self.proc = spawn("passnat", self.ns, self.command(), log=self.log)
        self.variant = variant
        deadline = time.monotonic() + 20.0
        while time.monotonic() < deadline:
            if not self.proc.alive():
                raise LabError(f"passnat run exited with status {self.proc.popen.returncode} "
                               f"(log {self.log}):\n{_tail(self.log)}")
            if self.control.exists() and self._show("status", "nat", check=False) is not None:
                return
            time.sleep(0.1)
        raise LabError(f"passnat run did not answer on {self.control} within 20 s (log {self.log}):\n"
                       f"{_tail(self.log)}")

    def _show(self, *what: str, json_out: bool = False, check: bool = True) -> str | None:
        argv = passnat_argv("show", *what, "--control", str(self.control))
        if json_out:
            argv.append("--json")
        cp = nsrun(self.ns, argv, check=False, timeout=20)
        if cp.returncode != 0:
            if check:
                raise LabError(f"passnat show {' '.join(what)} failed: {cp.stderr.strip()}")
            return None
        return cp.stdout

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None

    def status_lines(self) -> list[str]:
        out = self._show("status", "nat", check=False)
        return out.splitlines() if out is not None else ["(passnat show status nat failed)"]

    def counters(self) -> dict[str, int]:
        """``show counters --json`` flattened to {name: count} (per-interface figures left out)."""
        out = self._show("counters", json_out=True, check=False)
        if out is None:
            return {}
        try:
            return flatten_counters(json.loads(out))
        except ValueError:
            return {}

    def describe(self) -> str:
        return "passnat run " + " ".join(self.command()[4:])


class KernelRouter:
    """The Linux kernel's NAT (nft masquerade + explicit PPTP helper): the reference column."""

    name = "kernel"
    title = "kernel NAT"

    def __init__(self, ns: str, run_dir: Path, table: str):
        self.ns = ns
        self.run_dir = run_dir
        self.table = table
        self.ruleset_path = run_dir / "kernel-nat.nft"
        self.variant: Variant | None = None

    def apply(self, variant: Variant) -> None:
        ns = self.ns
        nsrun(ns, ["nft", "delete", "table", "ip", self.table], check=False)
        for itf, addr in ((ROUTER_LAN_IF, ROUTER_LAN), (ROUTER_WAN_IF, ROUTER_WAN)):
            nsrun(ns, ["ip", "addr", "replace", f"{addr}/{PREFIX_LEN}", "dev", itf])
            nsrun(ns, ["ip", "link", "set", itf, "up"])
        nsrun(ns, ["ip", "link", "set", ROUTER_WAN_IF, "mtu", str(variant.kernel_wan_mtu)])
        self.ruleset_path.write_text(variant.nft_ruleset(self.table))
        nsrun(ns, ["nft", "-f", str(self.ruleset_path)])
        nsrun(ns, ["sysctl", "-qw", *(f"{k}={v}" for k, v in variant.kernel_sysctls().items())])
        nsrun(ns, ["sysctl", "-qw", "net.ipv4.ip_forward=1"])
        nsrun(ns, ["conntrack", "-F"], check=False)
        nsrun(ns, ["conntrack", "-F", "expect"], check=False)
        self.variant = variant

    def stop(self) -> None:
        ns = self.ns
        nsrun(ns, ["sysctl", "-qw", "net.ipv4.ip_forward=0"], check=False)
        nsrun(ns, ["nft", "delete", "table", "ip", self.table], check=False)
        for itf in (ROUTER_LAN_IF, ROUTER_WAN_IF):
            nsrun(ns, ["ip", "addr", "flush", "dev", itf], check=False)
        nsrun(ns, ["ip", "link", "set", ROUTER_WAN_IF, "mtu", "1500"], check=False)
        nsrun(ns, ["conntrack", "-F"], check=False)
        self.variant = None

    def status_lines(self) -> list[str]:
        lines = nsrun(self.ns, ["conntrack", "-L"], check=False).stdout.splitlines()
        exp = nsrun(self.ns, ["conntrack", "-L", "expect"], check=False).stdout.splitlines()
        return lines + [f"expect: {e}" for e in exp]

    def counters(self) -> dict[str, int]:
        out = nsrun(self.ns, ["conntrack", "-S"], check=False).stdout
        totals: dict[str, int] = {}
        for line in out.splitlines():
            for tok in line.split()[1:]:
                if "=" in tok:
                    k, v = tok.split("=", 1)
                    if v.isdigit():
                        totals[k] = totals.get(k, 0) + int(v)
        return totals

    def describe(self) -> str:
        return f"nft table ip {self.table} (masquerade + pptp helper + DNAT), ip_forward=1"


def flatten_counters(data: Any) -> dict[str, int]:
    """Every ``{"name": N, "count": C}`` record and every ``name: int`` entry, by name."""
    flat: dict[str, int] = {}
    if isinstance(data, dict):
        if isinstance(data.get("name"), str) and isinstance(data.get("count"), int):
            flat[data["name"]] = data["count"]
        for k, v in data.items():
            if isinstance(v, int) and not isinstance(v, bool) and k != "count":
                flat.setdefault(k, v)
            elif isinstance(v, (dict, list)):
                for name, count in flatten_counters(v).items():
                    flat.setdefault(name, count)
    elif isinstance(data, list):
        for item in data:
            for name, count in flatten_counters(item).items():
                flat.setdefault(name, count)
    return flat


def _tail(path: Path, n: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"
