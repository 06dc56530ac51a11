"""``make demo`` / ``passnat lab demo``: the lab up, every scenario through passnat, then through
the kernel NAT, iperf3 through both, the report, the lab down.

Invariants:
  * the lab is removed on every way out: normal end, a failure, Ctrl-C or
    SIGTERM (both raise ``KeyboardInterrupt`` here; while tearing down,
    further signals are ignored so the teardown itself cannot be cut short);
  * a lab left by a crashed earlier demo with the same prefix is removed
    first (exact namespace names only);
  * the exit status is 0 only when every passnat scenario passed; the
    kernel column is a reference and never fails the demo.
"""
from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any, TextIO

from passnat.lab import report
from passnat.lab.lab import Lab
from passnat.lab.proc import LabError
from passnat.lab.scenarios import SCENARIOS, Outcome, Scenario, run_scenario
from passnat.lab.throughput import Throughput, iperf_tcp
from passnat.lab.variants import BASE

ROUTER_TITLES = {"passnat": "passnat", "kernel": "kernel NAT (nft masquerade + pptp helper)"}


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run_suite(lab: Lab, scenarios: Sequence[Scenario], routers: Sequence[str], *, iperf_seconds: float,
              progress: Callable[[str], None], results: dict[str, dict[str, Outcome]],
              tp: dict[str, Throughput]) -> None:
    """Run ``scenarios`` through each router in turn (the lab must be up), filling ``results``
    and ``tp`` as it goes (an interrupted run keeps what it finished)."""
    order = list(routers)
    for ri, r in enumerate(order):
        lab.use_router(r, BASE)
        if iperf_seconds > 0 and ri > 0:  # back to back with the previous router's run
            tp[r] = _iperf(lab, r, iperf_seconds, progress)
        results[r] = {}
        for i, sc in enumerate(scenarios, 1):
            tag = f"[{r:<7} {i:>2}/{len(scenarios)}]"
            progress(f"{tag} {sc.title} ...")
            o = run_scenario(lab, sc)
            results[r][sc.id] = o
            progress(f"{tag} {sc.title}: {o.verdict} ({o.seconds:.1f} s) {o.summary[:100]}")
        if iperf_seconds > 0 and ri == 0:
            lab.apply(BASE)
            tp[r] = _iperf(lab, r, iperf_seconds, progress)


def failover_text(res: dict[str, Any] | None, error: str | None = None) -> str:
    """The report section of the HA failover scenario."""
    head = "HA failover: two passnat routers + keepalived (VRRP), session sync (docs/ha.md)"
    if res is None:
        return f"{head}\n  FAIL  could not run: {error}\n"
    lines = [f"{head}\n  {'PASS' if res.get('ok') else 'FAIL'}  SIGKILL of the master's passnat in the middle of "
             f"five flows; backup forwarding after {res.get('failover_s')} s (goal <= 3 s)"]
    for e in res.get("events", []):
        lines.append(f"        {e}")
    m = res.get("mappings")
    if m is not None:
        lines.append(f"  {'ok    ' if m['ok'] else 'FAILED'} state  the backup held the master's {m['before']} sessions "
                     f"before the kill; after it {m['same_after']} were in use with the same id, outside port, SPI "
                     f"owners and Call IDs" + (f"; changed: {'; '.join(m['changed'])}" if m["changed"] else ""))
    mb = res.get("mappings_back")
    if mb is not None:
        lines.append(f"  {'ok    ' if mb['ok'] else 'FAILED'} back   after the rejoin and the planned switch back, the "
                     f"old master uses {mb['same_after']} of them unchanged"
                     + (f"; changed: {'; '.join(mb['changed'])}" if mb["changed"] else ""))
    for name in ("tcp", "udp", "pptp", "esp", "ikev2"):
        f = res.get("flows", {}).get(name)
        if f is not None:
            lines.append(f"  {'ok    ' if f['ok'] else 'FAILED'} {name:6} {f['text']}")
    lines.append("  (passnat only: the kernel NAT's comparable setup, conntrackd with keepalived, is out of scope)")
    return "\n".join(lines) + "\n"


def run_failover(prefix: str, progress: Callable[[str], None], duration: float) -> tuple[dict[str, Any] | None, str | None]:
    """Build the ha lab, run the failover experiment, tear the lab down (the caller handles signals)."""
    from passnat.lab.ha import HaPair, failover

    lab = Lab(prefix, ha=True)
    try:
        if lab.exists():
            progress(f"removing a lab left over with prefix {lab.prefix!r}: {', '.join(lab.down())}")
        progress(f"ha lab {lab.prefix!r}: two passnat routers, keepalived, the hosts ...")
        lab.up("passnat", BASE)
        pair = lab.router
        assert isinstance(pair, HaPair)
        return failover(lab, pair, progress=lambda t: progress(f"[ha] {t}"), duration=duration), None
    except LabError as e:
        return None, str(e).splitlines()[0]
    finally:
        lab.stop_peers()
        removed = lab.down()
        progress(f"ha lab down: removed {len(removed)} namespaces")


def failover_demo(prefix: str | None = None, *, duration: float = 60.0, out: TextIO = sys.stdout,
                  report_path: str | None = None) -> int:
    """``passnat lab failover``: the HA scenario alone."""
    def progress(msg: str) -> None:
        print(msg, file=out, flush=True)

    old = {s: signal.signal(s, _interrupt) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        res, err = run_failover(prefix or os.environ.get("PASSNAT_LAB_PREFIX", "pndemo-"), progress, duration)
    except KeyboardInterrupt:
        progress("interrupted")
        return 130
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    text = failover_text(res, err)
    print(text, file=out, flush=True)
    if report_path:
        with open(report_path, "w") as f:
            f.write(text)
    return 0 if res is not None and res.get("ok") else 1


def _iperf(lab: Lab, r: str, seconds: float, progress: Callable[[str], None]) -> Throughput:
    progress(f"[{r:<7}  iperf3] TCP pc1 -> srv1 for {seconds:.0f} s ...")
    t = iperf_tcp(lab, seconds)
    progress(f"[{r:<7}  iperf3] {t.text()}")
    return t


def demo(prefix: str | None = None, *, only: Sequence[str] = (), routers: Sequence[str] = ("passnat", "kernel"),
         iperf_seconds: float = 5.0, out: TextIO = sys.stdout, report_path: str | None = None,
         ha: bool | None = None, ha_duration: float = 40.0) -> int:
    lab = Lab(prefix or os.environ.get("PASSNAT_LAB_PREFIX", "pndemo-"))
    scenarios = [s for s in SCENARIOS if not only or s.id in only]
    if ha is None:
        ha = not only  # the HA failover scenario runs with the full demo (and `passnat lab failover`)
    unknown = set(only) - {s.id for s in SCENARIOS}
    if unknown:
        raise LabError(f"unknown scenario(s): {', '.join(sorted(unknown))}")

    def progress(msg: str) -> None:
        print(msg, file=out, flush=True)

    # SIGINT explicitly too: a shell starts background jobs with SIGINT ignored
    old = {s: signal.signal(s, _interrupt) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    results: dict[str, dict[str, Outcome]] = {}
    tp: dict[str, Throughput] = {}
    ha_res: dict[str, Any] | None = None
    ha_err: str | None = "not run (interrupted)"
    t0 = time.time()
    interrupted = False
    try:
        if lab.exists():
            progress(f"removing a lab left over with prefix {lab.prefix!r}: {', '.join(lab.down())}")
        progress(f"lab {lab.prefix!r}: building the topology (run dir {lab.run_dir}) ...")
        lab.up(routers[0], BASE)
        progress(f"lab up: {', '.join(lab.topo.namespaces)}")
        run_suite(lab, scenarios, routers, iperf_seconds=iperf_seconds, progress=progress, results=results, tp=tp)
        if ha and "passnat" in routers:
            removed = lab.down()
            progress(f"lab down: removed {len(removed)} namespaces; next: the HA failover scenario")
            ha_res, ha_err = run_failover(lab.prefix, progress, ha_duration)
    except KeyboardInterrupt:
        interrupted = True
        progress("interrupted: tearing the lab down")
    finally:
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(s, signal.SIG_IGN)
        try:
            removed = lab.down()
            progress(f"lab down: removed {len(removed)} namespaces; left: "
                     f"{', '.join(lab.topo.existing()) or 'nothing'}")
        finally:
            for s, h in old.items():
                signal.signal(s, h)
    header = [
        "=" * 100,
        (f"passnat VPN passthrough lab -- report ({time.strftime('%Y-%m-%d %H:%M:%S')}, "
         f"{time.time() - t0:.0f} s, lab prefix {lab.prefix!r}, kernel {os.uname().release})"),
        "=" * 100,
    ]
    titles = [(r, ROUTER_TITLES[r]) for r in routers if r in results]
    text = report.render(scenarios, results, titles, tp, header, BASE.passnat_config())
    if ha and "passnat" in routers:
        text += "\n" + failover_text(ha_res, ha_err)
    print(text, file=out, flush=True)
    path = report_path or str(lab.run_dir / "report.txt")
    try:
        lab.run_dir.mkdir(parents=True, exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
        progress(f"report saved to {path}")
    except OSError as e:
        progress(f"could not save the report to {path}: {e}")
    if interrupted:
        return 130
    first = routers[0]
    passed = [o.ok for o in results.get(first, {}).values()]
    ok = len(passed) == len(scenarios) and all(passed)
    if ha and "passnat" in routers:
        ok = ok and ha_res is not None and bool(ha_res.get("ok"))
        progress(f"HA failover: {'PASS' if ha_res is not None and ha_res.get('ok') else 'FAIL'}")
    progress(f"{first}: {sum(bool(p) for p in passed)}/{len(scenarios)} scenarios passed")
    return 0 if ok else 1
