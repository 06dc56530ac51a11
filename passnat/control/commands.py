"""The operator's subcommands of ``passnat``: run, show, clear, replay (argument parsing only).

  passnat run --config FILE [--interface NAME=LINUX ...] [--control PATH]
              [--log-level LEVEL] [--state-file PATH [--state-interval SECONDS]] [--prepare]
              [--capture FILE.pcapng] [--http ADDRESS:PORT]
  passnat show status nat|filter [--json] [--control PATH]
  passnat show counters|config|arp|metrics [--json] [--control PATH]
  passnat doctor [--json] [--control PATH]
  passnat clear nat session all|ID [--json] [--control PATH]
  passnat replay --config FILE CAPTURE.pcapng -o OUT.pcapng

``show``/``clear`` ask the daemon over the control socket (client.py) and print
the text form (format.py) or, with ``--json``, the data as JSON.  Exit status:
0 success, 1 the daemon refused the request, 2 usage, 3 no daemon, 4
permission denied, 5 the daemon is busy (every control connection slot in use).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from typing import Any

from passnat.control import format as fmt
from passnat.control.client import ClientError, request
from passnat.control.protocol import DEFAULT_CONTROL_PATH

_SHOW: dict[str, tuple[str, Callable[[Any], str]]] = {
    "status nat": ("status_nat", fmt.format_status_nat),
    "status filter": ("status_filter", fmt.format_status_filter),
    "counters": ("counters", fmt.format_counters),
    "config": ("config", lambda text: str(text)),
    "arp": ("arp", fmt.format_arp),
    "metrics": ("metrics", lambda text: str(text)),
}


def _control_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--control", default=DEFAULT_CONTROL_PATH, metavar="PATH",
                   help=f"the daemon's control socket (default {DEFAULT_CONTROL_PATH})")
    p.add_argument("--json", action="store_true", help="print the data as JSON")


def _ask(args: argparse.Namespace, op: str, render: Callable[[Any], str], **params: Any) -> int:
    try:
        data = request(args.control, op, **params)
    except ClientError as e:
        print(f"passnat: {e.message}", file=sys.stderr)
        return e.status
    try:
        if args.json:
            print(json.dumps(data, indent=2, default=str))
        else:
            sys.stdout.write(render(data))
        sys.stdout.flush()
    except BrokenPipeError:  # `passnat show ... | head`: the reader is gone, which is fine
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    op, render = _SHOW[args.what]
    return _ask(args, op, render)


def _cmd_doctor(args: argparse.Namespace) -> int:
    return _ask(args, "doctor", fmt.format_doctor)


def _cmd_clear(args: argparse.Namespace) -> int:
    target = args.target
    if target == "all":
        sid = None
    elif target.isdigit():
        sid = int(target)
    else:
        print(f"passnat: clear nat session: expected `all` or a session id, not {target!r}", file=sys.stderr)
        return 2
    return _ask(args, "clear_nat", lambda d: f"{d['cleared']} session(s) cleared\n", id=sid)


def _cmd_run(args: argparse.Namespace) -> int:
    from passnat.io.startup import RunRequest, run

    return run(RunRequest(config_path=args.config, control_path=args.control, mappings=args.interface,
                          state_file=args.state_file, prepare=args.prepare, log_level=args.log_level,
                          capture=args.capture, http=args.http, spin_us=args.spin_us, shed=not args.no_shed,
                          state_interval=args.state_interval))


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not (value == 0 or 1 <= value <= 86400):
        raise argparse.ArgumentTypeError("expected 0 (off) or 1-86400 seconds")
    return value


def _cmd_replay(args: argparse.Namespace) -> int:
    from passnat.io.replay import main as replay_main

    return replay_main(args.config, args.capture, args.output, log_level=args.log_level)


def add_parsers(sub: Any) -> None:
    """Register run/show/clear/replay on the ``passnat`` subparsers object."""
    r = sub.add_parser("run", help="run the router on Linux interfaces (root)")
    r.add_argument("--config", "-c", required=True, help="SEIL-style configuration file")
    r.add_argument("--interface", "-i", action="append", default=[], metavar="NAME=LINUX",
                   help="run configuration interface NAME on Linux interface LINUX (repeatable; "
                        "default: the same name)")
    r.add_argument("--control", default=DEFAULT_CONTROL_PATH, metavar="PATH",
                   help=f"control socket to create (default {DEFAULT_CONTROL_PATH})")
    r.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"],
                   help="log level (default info); logs go to stderr")
    r.add_argument("--state-file", metavar="PATH",
                   help="keep NAT sessions across restarts and crashes: load at start, save every "
                        "--state-interval seconds, at SIGHUP and at a clean stop")
    r.add_argument("--state-interval", type=_seconds, default=60.0, metavar="SECONDS",
                   help="seconds between periodic saves of --state-file (default 60; 0: only at SIGHUP "
                        "and at stop)")
    r.add_argument("--capture", metavar="FILE.pcapng",
                   help="write every packet the router sends to this pcapng file (a diagnostic; it grows)")
    r.add_argument("--http", metavar="ADDRESS:PORT",
                   help="serve the status page (/) and Prometheus metrics (/metrics) over HTTP on this "
                        "address, e.g. 127.0.0.1:9469 (default: off)")
    r.add_argument("--no-shed", action="store_true",
                   help="never put the load-shedding XDP program on an interface (passnat/io/shed.py: by "
                        "default it goes on while the receive ring overflows and drops a fraction of the frames "
                        "before the kernel's receive work)")
    r.add_argument("--spin-us", type=int, default=50, metavar="US",
                   help="after forwarding, keep looking for frames this many microseconds before sleeping "
                        "(default 50; 0: sleep at once; more: lower latency and fewer wake-ups under "
                        "medium load, for some CPU)")
    r.add_argument("--prepare", action="store_true",
                   help="make the host setup first (link up, forwarding off, arp_ignore=8, nftables "
                        "handoff table when the interfaces have kernel addresses, netdev ingress drop "
                        "after passnat's taps); undone at stop")
    r.set_defaults(func=_cmd_run)

    s = sub.add_parser("show", help="ask the running daemon: status nat|filter, counters, config, arp")
    ssub = s.add_subparsers(dest="show_what", metavar="WHAT")
    ssub.required = True
    st = ssub.add_parser("status", help="status nat | status filter")
    stsub = st.add_subparsers(dest="status_what", metavar="nat|filter")
    stsub.required = True
    for what, helptext in (("nat", "NAT sessions in SEIL's format"), ("filter", "filter rules and states")):
        p = stsub.add_parser(what, help=helptext)
        _control_args(p)
        p.set_defaults(func=_cmd_show, what=f"status {what}")
    for what, helptext in (("counters", "every drop reason, per-interface packets and bytes"),
                           ("config", "the running configuration (canonical text)"),
                           ("arp", "the ARP neighbour tables"),
                           ("metrics", "counters and sessions in Prometheus text format")):
        p = ssub.add_parser(what, help=helptext)
        _control_args(p)
        p.set_defaults(func=_cmd_show, what=what)

    d = sub.add_parser("doctor", help="why a VPN through the router fails, with the fix (docs/doctor.md)")
    _control_args(d)
    d.set_defaults(func=_cmd_doctor)

    c = sub.add_parser("clear", help="clear nat session all|ID")
    csub = c.add_subparsers(dest="clear_what", metavar="nat")
    csub.required = True
    cn = csub.add_parser("nat", help="clear nat session all|ID")
    cnsub = cn.add_subparsers(dest="clear_nat_what", metavar="session")
    cnsub.required = True
    cs = cnsub.add_parser("session", help="all | a session id from `show status nat`")
    cs.add_argument("target", metavar="all|ID")
    _control_args(cs)
    cs.set_defaults(func=_cmd_clear)

    rp = sub.add_parser("replay", help="feed a pcapng capture through the engine, write what it sends")
    rp.add_argument("--config", "-c", required=True, help="SEIL-style configuration file")
    rp.add_argument("capture", help="input pcapng; interface names (if_name) = configuration interfaces")
    rp.add_argument("-o", "--output", required=True, help="output pcapng (one interface block per interface)")
    rp.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    rp.set_defaults(func=_cmd_replay)
