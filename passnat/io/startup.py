"""``passnat run`` from the command line to a running daemon, refusing clearly when it cannot.

Order of the checks (each failure prints every problem to stderr and exits 1;
nothing on the host has been changed by then, except by ``--prepare``, which
is undone):

  1. running as root;
  2. the configuration parses (every ``file:line:column: error: ...`` printed);
  3. every ``--interface NAME=LINUX`` names a configuration interface;
  4. the control socket is free (no other daemon answering on it), and the
     host journal of a passnat that did not stop cleanly (killed) is replayed:
     what it changed on the host is put back (hostsetup.HostJournal);
  5. ``--prepare``: make the host setup (hostsetup.prepare);
  6. the host setup (hostsetup.check): interfaces exist, are Ethernet, up,
     MTU large enough, no kernel forwarding, kernel addresses handed off;
  7. opening the links (AF_PACKET, ring) succeeds, and the ``--http`` endpoint listens.

``--http ADDRESS:PORT`` is checked for its form first (with the configuration).
Under systemd (``Type=notify``) READY=1 is sent once all of this succeeded.

Every host change from here on (GRO/LRO switched off, --prepare's changes) is
recorded in the host journal before it is made, and put back at stop.

Exit status: 0 after a clean stop (SIGTERM/SIGINT), 1 refused to start,
3 stopped by an unexpected error (logged).
"""
from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field

from passnat.config import ConfigError, parse_config
from passnat.config.model import Config
from passnat.control.server import ControlError
from passnat.io import hostsetup
from passnat.io.hostsetup import Attachment

log = logging.getLogger("passnat.daemon")

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_FAILED = 3


@dataclass(slots=True)
class RunRequest:
    config_path: str
    control_path: str
    mappings: list[str] = field(default_factory=list)  # "lan1=eth1"
    state_file: str | None = None
    prepare: bool = False
    log_level: str = "info"
    capture: str | None = None
    http: str | None = None  # ADDRESS:PORT for the status page and /metrics
    spin_us: int = 50  # DaemonOptions.spin_us
    shed: bool = True  # DaemonOptions.shed
    state_interval: float = 60.0


def setup_logging(level: str) -> None:
    """Log lines to stderr (``--log-level``): with a timestamp on a terminal, with a journald
    priority prefix and no timestamp under journald; rate limits (passnat/service/logs.py)."""
    from passnat.service import logs

    logs.setup(level, sys.stderr)


def _refuse(problems: list[str]) -> int:
    for p in problems:
        print(f"passnat: {p}", file=sys.stderr)
    print("passnat: not starting", file=sys.stderr)
    return EXIT_REFUSED


def load_config(path: str) -> tuple[Config | None, list[str]]:
    """The configuration at ``path``, or None and the lines to print."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        return None, [f"cannot read {path}: {e.strerror or e}"]
    try:
        return parse_config(data.decode("utf-8"), path), []
    except UnicodeDecodeError as e:
        return None, [f"{path}: not UTF-8 text (byte {e.start})"]
    except ConfigError as e:
        return None, [str(p) for p in sorted([*e.warnings, *e.errors], key=lambda p: (p.line, p.column))] + [
            f"{path}: {len(e.errors)} error(s) in the configuration"]


def attachments(config: Config, mappings: list[str]) -> tuple[list[Attachment], list[str]]:
    """Configuration interface -> Linux interface (same name unless mapped)."""
    names = [i.name for i in config.interfaces]
    linux = {n: n for n in names}
    problems = []
    for m in mappings:
        name, sep, target = m.partition("=")
        if not sep or not name or not target:
            problems.append(f"--interface {m!r}: expected NAME=LINUX-NAME (e.g. lan1=eth1)")
        elif name not in linux:
            problems.append(f"--interface {m}: the configuration has no interface {name} "
                            f"(it has {', '.join(names) or 'none'})")
        elif len(target) > 15:
            problems.append(f"--interface {m}: {target!r} is not a Linux interface name (max. 15 characters)")
        else:
            linux[name] = target
    if not names:
        problems.append("the configuration names no interface (`interface lan0 add <address>/<len>`)")
    used = list(linux.values())
    for t in set(used):
        if used.count(t) > 1:
            problems.append(f"Linux interface {t} is mapped from more than one configuration interface")
    result = [Attachment(i.name, linux[i.name], i.effective_mtu) for i in config.interfaces]
    return result, problems


def ha_problems(config: Config, atts: list[Attachment]) -> list[str]:
    """``ha sync interface`` must be a dedicated link: one passnat does not forward on."""
    itf = config.ha.interface
    if not config.ha.enabled or itf is None:
        return []
    used = {a.linux: a.name for a in atts}
    if itf in used:
        return [f"ha sync interface {itf} is passnat's {used[itf]}: the sync connection needs a link of its "
                f"own (a dedicated cable or VLAN between the two routers, with kernel addresses; docs/ha.md)"]
    import os

    if not os.path.exists(f"/sys/class/net/{itf}"):
        return [f"ha sync interface {itf} does not exist"]
    return []


def run(req: RunRequest) -> int:
    setup_logging(req.log_level)
    if not hostsetup.is_root():
        return _refuse(["passnat run needs root (AF_PACKET sockets, interface settings)"])
    config, problems = load_config(req.config_path)
    if config is None:
        for line in problems[:-1]:
            print(line, file=sys.stderr)
        return _refuse(problems[-1:])
    for w in config.warnings:
        log.warning("%s", w)
    atts, problems = attachments(config, req.mappings)
    if req.http:
        from passnat.io.http import parse_bind

        try:
            parse_bind(req.http)
        except ValueError as e:
            problems.append(str(e))
    problems += ha_problems(config, atts)
    if problems:
        return _refuse(problems)
    from passnat.control.server import daemon_answers
    from passnat.io.daemon import Daemon, DaemonOptions
    from passnat.io.http import HttpError

    if daemon_answers(req.control_path):
        return _refuse([f"another passnat daemon answers on {req.control_path}"])
    journal = hostsetup.HostJournal(hostsetup.journal_path(req.control_path))
    problem = journal.recover()  # a killed passnat's GRO/offload and --prepare changes, put back
    if problem is not None:
        return _refuse([problem])
    undo = hostsetup.HostUndo(journal=journal)
    if req.prepare:
        try:
            undo = hostsetup.prepare([a.linux for a in atts], journal, vrrp=config.ha.enabled)
        except (OSError, RuntimeError) as e:
            return _refuse([f"--prepare failed: {e}"])
    problems = hostsetup.check(atts)
    if problems:
        undo.undo()
        return _refuse(problems + ["host setup: see docs/daemon.md (\"Host setup\"), or use --prepare"])
    daemon = Daemon(config, DaemonOptions(config_path=req.config_path, attachments=atts,
                                          control_path=req.control_path, state_file=req.state_file,
                                          host_undo=undo, capture=req.capture, http=req.http,
                                          spin_us=max(0, req.spin_us), state_interval=req.state_interval,
                                          shed=req.shed))
    for link in daemon.links.values():
        link.on_offloads = journal.record_offloads  # recorded before GRO/LRO are switched off
    try:
        daemon.start()
    except (ControlError, HttpError) as e:
        return _refuse([str(e)])
    except OSError as e:
        return _refuse([f"cannot attach to the interfaces: {e.strerror or e}"])
    status = EXIT_OK
    try:
        daemon.run()
    except Exception:
        log.exception("passnat stopped by an unexpected error")
        status = EXIT_FAILED
    finally:
        daemon.stop()  # saves, restores the interfaces and the host setup, removes the socket
    return status
