"""One running lab: its topology, run directory, state file, router backend and peers.

Role: the object the CLI, the demo and the tests share.  ``up`` builds the
topology and starts a router backend; ``down`` stops everything and deletes
the namespaces; ``spawn`` starts a peer program in a host and remembers it.

Invariants:
  * all generated files live in ``run_dir`` (``$PASSNAT_LAB_RUN/<prefix>``,
    default ``/tmp/passnat-lab/<prefix>``): configs, logs, the state file;
  * the state file is written before anything is created and removed last,
    so ``down`` after a crash finds what to remove; ``down`` also works with
    no state file at all (the namespaces are found by their exact names);
  * peers are stopped by pid; ``down`` then kills whatever is left inside
    the lab's namespaces (by pid) before deleting them.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from passnat.lab.proc import LabError, Proc, nsrun, spawn
from passnat.lab.routers import KernelRouter, PassnatRouter, RouterBackend
from passnat.lab.topology import HOSTS, ROUTER, ROUTER2, Topology
from passnat.lab.variants import BASE, Variant

DEFAULT_PREFIX = "pnlab-"
DEFAULT_RUN_BASE = "/tmp/passnat-lab"
ROUTER_KINDS = ("passnat", "kernel")


def default_prefix() -> str:
    return os.environ.get("PASSNAT_LAB_PREFIX", DEFAULT_PREFIX)


def run_base() -> Path:
    return Path(os.environ.get("PASSNAT_LAB_RUN", DEFAULT_RUN_BASE))


class Lab:
    def __init__(self, prefix: str | None = None, base: Path | None = None, ha: bool = False):
        #: ``ha``: the active/standby topology (two passnat routers + keepalived; passnat/lab/ha.py)
        self.ha = ha
        self.topo = Topology(prefix or default_prefix(), ha=ha)
        self.prefix = self.topo.prefix
        self.run_dir = (base or run_base()) / self.prefix.rstrip("-")
        self.state_path = self.run_dir / "state.json"
        self.procs: list[Proc] = []
        self._routers: dict[str, RouterBackend] = {}
        self.router: RouterBackend | None = None

    # ------------------------------------------------------------- state

    def ns(self, host: str) -> str:
        return self.topo.ns(host)

    def _write_state(self, **extra: Any) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        state = self.read_state()
        state.update({"prefix": self.prefix, "namespaces": self.topo.namespaces, "topology": "ha" if self.ha else "single",
                      "run_dir": str(self.run_dir), "pids": [p.pid for p in self.procs if p.alive()]})
        state.update(extra)
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=1))
        tmp.replace(self.state_path)

    def read_state(self) -> dict[str, Any]:
        try:
            data = json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def exists(self) -> bool:
        return bool(self.topo.existing())

    # ------------------------------------------------------------ routers

    def backend(self, kind: str) -> RouterBackend:
        if kind not in self._routers:
            ns = self.ns(ROUTER)
            if kind == "passnat" and self.ha:
                from passnat.lab.ha import HaPair

                self._routers[kind] = HaPair(self)
            elif kind == "kernel" and self.ha:
                raise LabError("the ha topology runs passnat only (the kernel's comparable setup, "
                               "conntrackd, is out of scope)")
            elif kind == "passnat":
                self._routers[kind] = PassnatRouter(ns, self.run_dir)
            elif kind == "kernel":
                self._routers[kind] = KernelRouter(ns, self.run_dir, table="lab_" + self.prefix.rstrip("-"))
            else:
                raise LabError(f"unknown router {kind!r} (one of: {', '.join(ROUTER_KINDS)})")
        return self._routers[kind]

    def use_router(self, kind: str, variant: Variant = BASE) -> RouterBackend:
        """Make ``kind`` the router (stopping the other one) with ``variant``."""
        if self.router is not None and self.router.name != kind:
            self.router.stop()
        self.router = self.backend(kind)
        self.router.apply(variant)
        self._write_state(router=kind, variant=variant.label())
        return self.router

    def apply(self, variant: Variant) -> RouterBackend:
        if self.router is None:
            raise LabError("no router running")
        self.router.apply(variant)
        self._write_state(variant=variant.label())
        return self.router

    # -------------------------------------------------------- up / down

    def up(self, router: str = "passnat", variant: Variant = BASE) -> None:
        if router not in ROUTER_KINDS:
            raise LabError(f"unknown router {router!r} (one of: {', '.join(ROUTER_KINDS)})")
        if self.exists():
            raise LabError(f"lab {self.prefix!r} already exists; remove it with: "
                           f"passnat lab down --prefix {self.prefix}")
        if self.run_dir.exists():
            shutil.rmtree(self.run_dir)
        self._write_state(created=time.time(), router=None)
        try:
            self.topo.build()
            self.use_router(router, variant)
        except BaseException:
            self.down()
            raise

    def down(self) -> list[str]:
        """Stop peers and router by pid, delete the namespaces, remove the state file."""
        self.stop_peers()
        for r in self._routers.values():
            try:
                r.stop()
            except LabError:
                pass
        self.router = None
        removed = self.topo.destroy()
        try:
            self.state_path.unlink()
        except FileNotFoundError:
            pass
        return removed

    # -------------------------------------------------------------- peers

    def peer_argv(self, module: str, *args: str) -> list[str]:
        """A peer program of this package (run with the lab's interpreter)."""
        return [sys.executable, "-m", f"passnat.lab.peers.{module}", *args]

    def spawn(self, name: str, host: str, argv: Sequence[str], *, pipe: bool = False,
              log: str | None = None) -> Proc:
        p = spawn(name, self.ns(host), argv, pipe=pipe,
                  log=self.run_dir / (log or f"{name}.log"))
        self.procs.append(p)
        self._write_state()
        return p

    def stop_peers(self) -> None:
        for p in reversed(self.procs):
            p.stop()
        self.procs.clear()

    def forget(self, proc: Proc) -> None:
        proc.stop()
        if proc in self.procs:
            self.procs.remove(proc)

    def run_in(self, host: str, argv: Sequence[str], *, check: bool = True,
               timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        return nsrun(self.ns(host), argv, check=check, timeout=timeout)

    # -------------------------------------------------------------- status

    def status(self) -> str:
        st = self.read_state()
        present = self.topo.existing()
        lines = [f"lab {self.prefix!r}: {'up' if present else 'down'}; run dir {self.run_dir}"]
        if not present:
            return "\n".join(lines)
        lines.append(f"router: {st.get('router') or '-'} (variant: {st.get('variant', '-')})")
        for box in self.topo.boxes:
            ns = self.ns(box)
            if ns not in present:
                lines.append(f"  {box:7} {ns:18} MISSING")
                continue
            addr = HOSTS[box].addr if box in HOSTS else ("192.168.0.1 / 203.0.113.1" if box in (ROUTER, ROUTER2)
                                                         else "switch")
            pids = _pids_with_names(ns)
            lines.append(f"  {box:7} {ns:18} {addr:26} {pids}")
        return "\n".join(lines)


def _pids_with_names(ns: str) -> str:
    from passnat.lab.proc import namespace_pids

    out = []
    for pid in namespace_pids(ns):
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            continue
        out.append(f"{comm}[{pid}]")
    return " ".join(out)
