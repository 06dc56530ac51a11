"""The systemd unit shipped with passnat, and ``passnat service unit|install``.

``passnat/service/passnat.service`` is package data; ``@PASSNAT@`` in it
becomes the ``passnat`` command of this installation (the console script next
to the running interpreter, e.g. ``/usr/local/bin/passnat`` or a venv's
``bin/passnat``; ``python3 -m passnat`` when there is none).

  passnat service unit                     print the unit for this installation
  passnat service install [--root DIR] [--interface NAME=LINUX ...] [--prepare]
                          [--http ADDRESS:PORT] [--force]
      writes DIR/etc/systemd/system/passnat.service and, when missing (or with
      --force), DIR/etc/passnat/passnat.env with PASSNAT_OPTIONS from the
      options given; runs ``systemctl daemon-reload`` when installing into the
      running system (DIR = /) under systemd.  It never enables or starts the
      service and never writes the configuration itself.
"""
from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import Any

UNIT_NAME = "passnat.service"
CONFIG_PATH = "/etc/passnat/passnat.conf"
ENV_PATH = "/etc/passnat/passnat.env"
CONTROL_PATH = "/run/passnat/control.sock"
STATE_PATH = "/var/lib/passnat/state.json"
UNIT_DIR = "/etc/systemd/system"


def template() -> str:
    return resources.files("passnat.service").joinpath(UNIT_NAME).read_text(encoding="utf-8")


def command() -> str:
    """How systemd should start this installation's ``passnat``."""
    script = Path(sys.executable).parent / "passnat"
    if script.is_file() and os.access(script, os.X_OK):
        return str(script)
    found = shutil.which("passnat")
    if found and Path(found).resolve().parent == Path(sys.executable).resolve().parent:
        return found
    return f"{sys.executable} -m passnat"


def render(passnat: str | None = None) -> str:
    return template().replace("@PASSNAT@", passnat or command())


def env_file(interfaces: list[str], prepare: bool, http: str | None, extra: list[str]) -> str:
    opts: list[str] = []
    for m in interfaces:
        opts += ["--interface", m]
    if prepare:
        opts.append("--prepare")
    if http:
        opts += ["--http", http]
    opts += extra
    for o in opts:
        if any(c.isspace() for c in o) or '"' in o or "\\" in o:
            raise ValueError(f"option {o!r}: no spaces, quotes or backslashes in PASSNAT_OPTIONS")
    return ("# passnat's options (EnvironmentFile of passnat.service): passnat run "
            f"--config {CONFIG_PATH} --control {CONTROL_PATH} --state-file {STATE_PATH} $PASSNAT_OPTIONS\n"
            "# e.g. --interface lan0=eth1 --interface lan1=eth2 --prepare --http 127.0.0.1:9469\n"
            f"PASSNAT_OPTIONS={' '.join(opts)}\n")


def install(root: str, interfaces: list[str], prepare: bool, http: str | None, extra: list[str],
            force: bool = False, out: Any = None) -> int:
    out = out or sys.stdout
    base = Path(root)
    unit_path = base / UNIT_DIR.lstrip("/") / UNIT_NAME
    env_path = base / ENV_PATH.lstrip("/")
    conf_path = base / CONFIG_PATH.lstrip("/")
    try:
        env_text = env_file(interfaces, prepare, http, extra)
    except ValueError as e:
        print(f"passnat service install: {e}", file=sys.stderr)
        return 2
    unit_path.parent.mkdir(parents=True, exist_ok=True)
    unit_path.write_text(render())
    unit_path.chmod(0o644)
    print(f"wrote {unit_path}", file=out)
    env_path.parent.mkdir(parents=True, exist_ok=True)
    if env_path.exists() and not force:
        print(f"{env_path} exists: left as it is (--force replaces it)", file=out)
    else:
        env_path.write_text(env_text)
        env_path.chmod(0o644)
        print(f"wrote {env_path}: {env_text.splitlines()[-1]}", file=out)
    if not conf_path.exists():
        print(f"no configuration yet: write {conf_path} (check it with `passnat check --config {conf_path}`)",
              file=out)
    if Path(root).resolve() == Path("/") and os.path.isdir("/run/systemd/system") and shutil.which("systemctl"):
        res = subprocess.run(["systemctl", "daemon-reload"], capture_output=True, text=True, check=False)
        print("systemctl daemon-reload: " + ("done" if res.returncode == 0 else res.stderr.strip()), file=out)
    print("then: systemctl enable --now passnat; journalctl -u passnat; passnat show status nat", file=out)
    return 0


def _cmd_unit(args: argparse.Namespace) -> int:
    sys.stdout.write(render(args.command))
    return 0


def _cmd_install(args: argparse.Namespace) -> int:
    return install(args.root, args.interface, args.prepare, args.http, shlex.split(args.options or ""),
                   force=args.force)


def register(sub: Any) -> None:
    """``passnat service unit|install`` on the ``passnat`` subparsers."""
    s = sub.add_parser("service", help="the systemd unit: print it or install it (docs/operations.md)")
    ssub = s.add_subparsers(dest="service_command", metavar="unit|install")
    ssub.required = True
    u = ssub.add_parser("unit", help="print the systemd unit for this installation")
    u.add_argument("--command", help="the passnat command in ExecStart= (default: this installation's)")
    u.set_defaults(func=_cmd_unit)
    i = ssub.add_parser("install", help="write passnat.service and /etc/passnat/passnat.env")
    i.add_argument("--root", default="/", help="install below this directory (default /)")
    i.add_argument("--interface", "-i", action="append", default=[], metavar="NAME=LINUX",
                   help="passed to passnat run (repeatable)")
    i.add_argument("--prepare", action="store_true", help="pass --prepare to passnat run")
    i.add_argument("--http", metavar="ADDRESS:PORT", help="pass --http to passnat run (status page, /metrics)")
    i.add_argument("--options", help="further options for passnat run, e.g. '--log-level debug'")
    i.add_argument("--force", action="store_true", help="replace an existing passnat.env")
    i.set_defaults(func=_cmd_install)
