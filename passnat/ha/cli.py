"""``passnat ha ...``: the active/standby role over the control socket (docs/ha.md).

    passnat ha master|backup [--control PATH]     switch the role (keepalived's notify scripts)
    passnat ha status [--json] [--control PATH]   role, sync connections, counters
    passnat ha check [--control PATH]             health: exit 0 when the daemon answers (keepalived's track_script)
    passnat ha keepalived-config --lan-if IF --lan-address A --wan-if IF --wan-address A --priority N
                                 [--control PATH] [--router-id N] [--standby-file PATH] [--name N]
                                                  a keepalived.conf for this router

``master``/``backup`` also record the role next to the control socket
(``ha-role``) before asking the daemon, so a daemon that was down or
restarting starts in the role keepalived last asked for (exit status 3 then
says the daemon did not answer).
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from passnat.control.protocol import DEFAULT_CONTROL_PATH


def _role(args: argparse.Namespace) -> int:
    from passnat.control.client import ClientError, request
    from passnat.ha.node import status_text, write_role

    try:
        write_role(args.control, args.role)
    except OSError as e:
        print(f"passnat: cannot record the role next to {args.control}: {e.strerror or e}", file=sys.stderr)
    try:
        st = request(args.control, "ha_role", role=args.role, timeout=5.0)
    except ClientError as e:
        print(f"passnat: {e.message} (role {args.role} recorded for its next start)", file=sys.stderr)
        return e.status
    sys.stdout.write(json.dumps(st, indent=2) + "\n" if args.json else status_text(st))
    return 0


def _status(args: argparse.Namespace) -> int:
    from passnat.control.client import ClientError, request
    from passnat.ha.node import status_text

    try:
        st = request(args.control, "ha_status")
    except ClientError as e:
        print(f"passnat: {e.message}", file=sys.stderr)
        return e.status
    sys.stdout.write(json.dumps(st, indent=2) + "\n" if args.json else status_text(st))
    return 0


def _check(args: argparse.Namespace) -> int:
    from passnat.ha.check import healthy

    ok, text = healthy(args.control, args.timeout)
    print(("ok: " if ok else "FAILED: ") + text, file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1


def _keepalived(args: argparse.Namespace) -> int:
    from passnat.ha.keepalived import Segment, render

    segs = [Segment("lan", args.lan_if, args.lan_address, args.router_id),
            Segment("wan", args.wan_if, args.wan_address, args.router_id + 1)]
    sys.stdout.write(render(segs, priority=args.priority, control=args.control, standby=args.standby_file,
                            name=args.name))
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("ha", help="active/standby: role, sync status, health check (docs/ha.md)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    hs = p.add_subparsers(dest="ha_command", metavar="master|backup|status|check|keepalived-config")
    hs.required = True

    def control(q: argparse.ArgumentParser) -> None:
        q.add_argument("--control", default=DEFAULT_CONTROL_PATH, metavar="PATH",
                       help=f"the daemon's control socket (default {DEFAULT_CONTROL_PATH})")

    for role in ("master", "backup"):
        q = hs.add_parser(role, help=f"become {role} (keepalived's notify script)")
        control(q)
        q.add_argument("--json", action="store_true")
        q.set_defaults(func=_role, role=role)
    q = hs.add_parser("status", help="role, sync connections, counters")
    control(q)
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=_status)
    q = hs.add_parser("check", help="exit 0 when the daemon answers (keepalived's track_script)")
    control(q)
    q.add_argument("--timeout", type=float, default=1.0, metavar="SECONDS")
    q.set_defaults(func=_check)
    q = hs.add_parser("keepalived-config", help="print a keepalived.conf for this router")
    control(q)
    q.add_argument("--lan-if", required=True, help="Linux interface of the LAN (passnat's lan0)")
    q.add_argument("--lan-address", required=True, help="the router's shared LAN address (e.g. 192.168.0.1)")
    q.add_argument("--wan-if", required=True, help="Linux interface of the WAN (passnat's lan1)")
    q.add_argument("--wan-address", required=True, help="the router's shared WAN address")
    q.add_argument("--priority", type=int, required=True, help="VRRP priority: e.g. 150 and 100 for the two")
    q.add_argument("--router-id", type=int, default=51, help="VRRP id of the LAN instance (WAN: +1)")
    q.add_argument("--standby-file", default="/var/lib/passnat/ha-standby",
                   help="keepalived's track file: 1 = give up mastership (planned switch, maintenance)")
    q.add_argument("--name", default="passnat", help="keepalived's router_id and the sync group's name")
    q.set_defaults(func=_keepalived)
