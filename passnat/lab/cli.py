"""``passnat lab ...``: the lab's command line (registered by ``passnat.control.cli``).

    passnat lab up     [--prefix P] [--router passnat|kernel] [--topology single|ha]
    passnat lab down   [--prefix P]
    passnat lab status [--prefix P]
    passnat lab exec   [--prefix P] HOST CMD...
    passnat lab config                       print the base router configuration
    passnat lab list                         the scenarios
    passnat lab run    [--prefix P] [--router passnat|kernel|both] [--iperf S] [SCENARIO...]
    passnat lab demo   [--prefix P] [--iperf S] [--passnat-only]
    passnat lab failover [--prefix P] [--duration S]  the ha topology: SIGKILL of the master, switch back

``--prefix`` defaults to ``$PASSNAT_LAB_PREFIX`` or ``pnlab-`` (``pndemo-``
for ``demo``/``run``, which build and remove a lab of their own).
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from passnat.lab.lab import ROUTER_KINDS, Lab, default_prefix
from passnat.lab.proc import LabError


def _need_root() -> None:
    from passnat.service.deps import require

    require("scapy", "cryptography")  # the peers (passnat/lab/peers): one line from passnat's main if missing
    if os.geteuid() != 0:
        raise LabError("the lab needs root (network namespaces, veths, nftables)")


def _up(a: argparse.Namespace) -> int:
    _need_root()
    lab = Lab(a.prefix, ha=a.topology == "ha")
    lab.up(a.router)
    print(f"lab {lab.prefix!r} up ({a.topology} topology), router: {a.router}; files in {lab.run_dir}")
    if lab.router is not None:
        print(f"router: {lab.router.describe()}")
    if a.router == "passnat" and a.topology == "single":
        print(f"configuration ({lab.run_dir / 'router.conf'}):")
        print("".join("  | " + ln + "\n" for ln in (lab.run_dir / "router.conf").read_text().splitlines()), end="")
    print(f"try: passnat lab exec{_pfx(a)} pc1 ping -c 2 203.0.113.10 ; passnat lab status{_pfx(a)} ; "
          f"passnat lab down{_pfx(a)}")
    return 0


def _pfx(a: argparse.Namespace) -> str:
    return f" --prefix {a.prefix}" if a.prefix and a.prefix != default_prefix() else ""


def _down(a: argparse.Namespace) -> int:
    _need_root()
    lab = Lab(a.prefix)
    removed = lab.down()
    print(f"lab {lab.prefix!r}: removed {len(removed)} namespaces" + (f" ({', '.join(removed)})" if removed else ""))
    return 0


def _status(a: argparse.Namespace) -> int:
    lab = Lab(a.prefix, ha=Lab(a.prefix).read_state().get("topology") == "ha")
    print(lab.status())
    kind = lab.read_state().get("router")
    if lab.exists() and kind in ROUTER_KINDS:
        print(f"\nsessions ({kind}):")
        for ln in lab.backend(kind).status_lines():
            print("  " + ln)
    return 0 if lab.exists() else 3


def _exec(a: argparse.Namespace) -> int:
    lab = Lab(a.prefix, ha=True)  # (every box name, router2 too)
    if not a.cmd:
        raise LabError("exec needs a command, e.g.: passnat lab exec pc1 ping -c 2 203.0.113.10")
    ns = lab.ns(a.host)
    if ns not in lab.topo.existing():
        raise LabError(f"lab {lab.prefix!r} is not up (no namespace {ns})")
    cmd = a.cmd[1:] if a.cmd[0] == "--" else a.cmd
    os.execvp("ip", ["ip", "netns", "exec", ns, *cmd])
    return 127  # not reached: execvp replaces this process


def _config(a: argparse.Namespace) -> int:
    from passnat.lab.variants import BASE

    print(BASE.passnat_config(), end="")
    return 0


def _list(a: argparse.Namespace) -> int:
    from passnat.lab.scenarios import SCENARIOS

    for s in SCENARIOS:
        print(f"{s.id:<24} {s.title}  [{s.variant.label()}]")
    return 0


def _run(a: argparse.Namespace) -> int:
    from passnat.lab.demo import demo

    _need_root()
    routers = ROUTER_KINDS if a.router == "both" else (a.router,)
    return demo(a.prefix or None, only=a.scenarios, routers=routers, iperf_seconds=a.iperf,
                report_path=a.report)


def _demo(a: argparse.Namespace) -> int:
    from passnat.lab.demo import demo

    _need_root()
    routers = ("passnat",) if a.passnat_only else ROUTER_KINDS
    return demo(a.prefix or None, routers=routers, iperf_seconds=a.iperf, report_path=a.report)


def _failover(a: argparse.Namespace) -> int:
    from passnat.lab.demo import failover_demo

    _need_root()
    return failover_demo(a.prefix or None, duration=a.duration, report_path=a.report)


def _wrap(fn: Any) -> Any:
    def call(a: argparse.Namespace) -> int:
        try:
            return int(fn(a))
        except LabError as e:
            print(f"passnat lab: {e}", file=sys.stderr)
            return 1
    return call


def register(sub: Any) -> None:
    """Add ``lab`` to the ``passnat`` command's subparsers."""
    lab = sub.add_parser("lab", help="the VPN passthrough lab: namespaces, real VPN peers, the demo",
                         description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ls = lab.add_subparsers(dest="lab_command", metavar="LABCMD")
    ls.required = True

    def add(name: str, fn: Any, help: str, prefix_default: str | None = None) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = ls.add_parser(name, help=help)
        p.add_argument("--prefix", default=prefix_default if prefix_default is not None else default_prefix(),
                       help="namespace name prefix (default $PASSNAT_LAB_PREFIX or pnlab-)")
        p.set_defaults(func=_wrap(fn))
        return p

    p = add("up", _up, "build the lab and start the router")
    p.add_argument("--router", choices=ROUTER_KINDS, default="passnat",
                   help="what runs in the router namespace (default passnat)")
    p.add_argument("--topology", choices=("single", "ha"), default="single",
                   help="ha: two passnat routers with keepalived and session sync (docs/ha.md)")
    add("down", _down, "stop everything the lab started and delete its namespaces")
    add("status", _status, "namespaces, processes and router sessions of a lab")
    p = add("exec", _exec, "run a command in a lab host (pc1 pc2 pc3 lansrv srv1 srv2 router lan wan)")
    p.add_argument("host")
    p.add_argument("cmd", nargs=argparse.REMAINDER)
    ls.add_parser("config", help="print the base router configuration").set_defaults(func=_wrap(_config))
    ls.add_parser("list", help="list the scenarios").set_defaults(func=_wrap(_list))
    demo_prefix = os.environ.get("PASSNAT_LAB_PREFIX", "pndemo-")
    p = add("run", _run, "build a lab, run scenarios, print the report, remove the lab", demo_prefix)
    p.add_argument("--router", choices=(*ROUTER_KINDS, "both"), default="passnat")
    p.add_argument("--iperf", type=float, default=0.0, metavar="SECONDS", help="iperf3 run (default none)")
    p.add_argument("--report", help="also write the report to this file")
    p.add_argument("scenarios", nargs="*", help="scenario ids (default: all; see `passnat lab list`)")
    p = add("failover", _failover, "the ha topology: flows, SIGKILL of the master, rejoin, switch back",
            demo_prefix)
    p.add_argument("--duration", type=float, default=60.0, help="how long the flows run (default 60 s, at least 40)")
    p.add_argument("--report", help="also write the report to this file")
    p = add("demo", _demo, "the full demo: every scenario through passnat and the kernel NAT", demo_prefix)
    p.add_argument("--iperf", type=float, default=5.0, metavar="SECONDS", help="iperf3 duration (default 5)")
    p.add_argument("--passnat-only", action="store_true", help="skip the kernel NAT column")
    p.add_argument("--report", help="also write the report to this file")
