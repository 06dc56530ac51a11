"""The host setup a userspace router needs, checked at start, and a helper that makes it.

passnat is the IPv4 router for the addresses in its configuration; the Linux
kernel on the same interfaces must not also route or answer for them.  Two
setups are supported (docs/daemon.md, "Host setup"):

  A. *no kernel addresses*: the interface carries no IPv4 address.
  B. *handoff*: the interface keeps kernel addresses, but an nftables base
     chain on the ``input`` hook drops every packet with ``iifname`` the
     interface and one on the ``output`` hook every packet with ``oifname``
     the interface (as ``shared/lab/router-handoff.nft``; AF_PACKET sees
     frames before those hooks and its sends bypass them), and
     ``net.ipv4.conf.<if>.arp_ignore`` is 8 (the kernel answers no ARP there).

In both, per interface: it exists, is an Ethernet interface, is up, its MTU is
at least the configuration's, and ``net.ipv4.conf.<if>.forwarding`` is 0 (the
kernel would otherwise forward frames sent to the shared MAC address alongside
passnat; ``sysctl net.ipv4.ip_forward=1`` sets it on every interface).

``check`` returns every problem at once (empty list: fine).  ``prepare`` makes
setup B (link up, forwarding 0, arp_ignore 8, the nftables table
``inet passnat_handoff``) and returns a ``HostUndo`` that puts every changed
value back.  It also installs ``netdev passnat_ingress``: an ingress chain per
interface with policy drop.  AF_PACKET taps get every frame before the
ingress hook, so passnat still sees everything, while the kernel skips its
own ARP and IP processing of frames that only passnat handles (measured:
TCP through passnat about 20 % faster on veth).

The host journal (``HostJournal``, issue 13 §4): every host setting passnat
changes -- GRO/LRO switched off when a link opens, and each change of
``prepare`` -- is written with its original value to a file in the run
directory (next to the control socket: ``control.sock`` -> ``control.host.json``)
*before* it is changed.  A clean stop puts everything back and removes the
file.  If passnat is killed (SIGKILL, OOM, power loss of a tmpfs is moot) the
file stays, and the next ``passnat run`` with that control socket restores
every recorded original first (``HostJournal.recover``), then sets the host up
afresh: GRO is never left off by a crash.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
from dataclasses import dataclass, field
from typing import Any

from passnat.io.afpacket import ARPHRD_ETHER, link_info

log = logging.getLogger("passnat.io.hostsetup")

HANDOFF_TABLE = "passnat_handoff"
INGRESS_TABLE = "passnat_ingress"


@dataclass(frozen=True, slots=True)
class Attachment:
    """One configuration interface and the Linux interface it runs on."""

    name: str  # configuration name (lan0)
    linux: str  # Linux interface name (eth1)
    mtu: int  # the configuration's effective MTU


def sysctl_path(ifname: str, key: str) -> str:
    return f"/proc/sys/net/ipv4/conf/{ifname}/{key}"


def read_sysctl(ifname: str, key: str) -> int | None:
    try:
        with open(sysctl_path(ifname, key)) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def write_sysctl(ifname: str, key: str, value: int) -> None:
    with open(sysctl_path(ifname, key), "w") as f:
        f.write(f"{value}\n")


def kernel_addresses(ifname: str) -> list[str]:
    """The IPv4 addresses (``a.b.c.d/len``) the kernel has on ``ifname``."""
    from pyroute2 import IPRoute  # type: ignore[import-untyped]

    with IPRoute() as ipr:
        idx = ipr.link_lookup(ifname=ifname)
        if not idx:
            return []
        return [f"{m.get_attr('IFA_ADDRESS')}/{m['prefixlen']}"
                for m in ipr.get_addr(family=socket.AF_INET, index=idx[0])]


# ------------------------------------------------------------------ nftables


def nft_ruleset() -> list[dict[str, Any]] | None:
    """``nft -j list ruleset`` as a list of objects, or None when nft is unavailable."""
    nft = shutil.which("nft")
    if nft is None:
        return None
    try:
        res = subprocess.run([nft, "-j", "list", "ruleset"], capture_output=True, text=True, timeout=10,
                             check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if res.returncode != 0:
        return None
    try:
        objs: list[dict[str, Any]] = json.loads(res.stdout).get("nftables", [])
    except ValueError:
        return None
    return objs


def handoff_interfaces(ruleset: list[dict[str, Any]], hook: str) -> set[str]:
    """Interfaces for which a base chain on ``hook`` (input/output, family ip or inet)
    has an unconditional ``{i,o}ifname <name|set> [counter] drop`` rule."""
    key = "iifname" if hook == "input" else "oifname"
    chains = {(c["family"], c["table"], c["name"]) for o in ruleset if (c := o.get("chain"))
              and c.get("hook") == hook and c.get("family") in ("ip", "inet")}
    names: set[str] = set()
    for o in ruleset:
        r = o.get("rule")
        if not r or (r.get("family"), r.get("table"), r.get("chain")) not in chains:
            continue
        exprs = [e for e in r.get("expr", []) if "counter" not in e]
        if len(exprs) != 2 or "drop" not in exprs[1]:
            continue
        m = exprs[0].get("match")
        if not m or m.get("op") not in ("==", "in") or m.get("left") != {"meta": {"key": key}}:
            continue
        right = m.get("right")
        if isinstance(right, str):
            names.add(right)
        elif isinstance(right, dict) and isinstance(right.get("set"), list):
            names.update(x for x in right["set"] if isinstance(x, str))
    return names


# ------------------------------------------------------------------ check


def check(attachments: list[Attachment]) -> list[str]:
    """Every problem with the host setup for ``attachments`` (empty: ready to run)."""
    problems: list[str] = []
    ruleset: list[dict[str, Any]] | None = None
    ruleset_read = False
    for a in attachments:
        label = a.linux if a.linux == a.name else f"{a.linux} (configuration {a.name})"
        try:
            info = link_info(a.linux)
        except OSError:
            problems.append(f"interface {label} does not exist"
                            + ("" if a.linux != a.name else
                               f"; map it to a Linux interface with --interface {a.name}=<linux-name>"))
            continue
        if info.hwtype != ARPHRD_ETHER:
            problems.append(f"interface {label} is not an Ethernet interface (type {info.hwtype})")
            continue
        if not info.up:
            problems.append(f"interface {label} is down: `ip link set {a.linux} up` (or run with --prepare)")
        if info.mtu < a.mtu:
            problems.append(f"interface {label} has MTU {info.mtu}, smaller than the configuration's "
                            f"{a.mtu}: raise it (`ip link set {a.linux} mtu {a.mtu}`) or lower "
                            f"`interface {a.name} mtu`")
        fwd = read_sysctl(a.linux, "forwarding")
        if fwd != 0:
            problems.append(f"net.ipv4.conf.{a.linux}.forwarding={fwd}: the kernel would forward packets "
                            f"arriving on {a.linux} alongside passnat; set it to 0 "
                            f"(`sysctl -w net.ipv4.conf.{a.linux}.forwarding=0`; note that "
                            f"net.ipv4.ip_forward=1 sets it on every interface)")
        addrs = kernel_addresses(a.linux)
        if not addrs:
            continue  # setup A
        # setup B: the kernel keeps its addresses but must neither answer nor route for them
        if not ruleset_read:
            ruleset, ruleset_read = nft_ruleset(), True
        missing = []
        if ruleset is None:
            missing.append("nft is not available to verify the handoff rules")
        else:
            for hook, key in (("input", "iifname"), ("output", "oifname")):
                if a.linux not in handoff_interfaces(ruleset, hook):
                    missing.append(f"no nftables `{hook}` hook rule `{key} \"{a.linux}\" drop`")
        ign = read_sysctl(a.linux, "arp_ignore")
        if ign != 8:
            missing.append(f"net.ipv4.conf.{a.linux}.arp_ignore={ign} (must be 8)")
        if missing:
            problems.append(f"interface {label} has kernel IPv4 address(es) {', '.join(addrs)}: the kernel "
                            f"would answer for them ({'; '.join(missing)}). Remove the addresses, or "
                            f"install the handoff rules (see docs/daemon.md, or run with --prepare)")
    return problems


# ------------------------------------------------------------------ prepare


_SYSCTL_KEYS = frozenset(("forwarding", "arp_ignore"))
_TABLES = {("inet", HANDOFF_TABLE): "table_created", ("netdev", INGRESS_TABLE): "ingress_created"}


def _ifname_ok(name: Any) -> bool:
    return isinstance(name, str) and 0 < len(name) <= 15 and "/" not in name and name not in (".", "..")


def journal_path(control_path: str) -> str:
    """The host journal for the daemon of ``control_path`` (same directory)."""
    base = control_path[:-5] if control_path.endswith(".sock") else control_path
    return base + ".host.json"


class HostJournal:
    """The originals of every host setting a running passnat changed, on disk before each change.

    File: ``{"pid": <daemon>, "offloads": {ifname: [gro_was_on, lro_was_on]},
    "sysctls": [[ifname, key, old]], "links_up": [ifname], "tables": [[family, table]]}``,
    written atomically, mode 0600.  A write failure is logged once and otherwise ignored
    (the journal is a safety net for a crash, not a condition to run)."""

    def __init__(self, path: str):
        self.path = path
        self.offloads: dict[str, list[bool]] = {}
        self.sysctls: list[list[Any]] = []
        self.links_up: list[str] = []
        self.tables: list[list[str]] = []
        self._warned = False

    # ------------------------------------------------------------ recording

    def record_offloads(self, state: Any) -> None:
        """``ethtool.OffloadState`` about to be switched off (``Link.on_offloads``)."""
        prev = self.offloads.get(state.ifname, [False, False])
        self.offloads[state.ifname] = [prev[0] or state.gro_was_on, prev[1] or state.lro_was_on]
        self._write()

    def record_sysctl(self, ifname: str, key: str, old: int) -> None:
        self.sysctls.append([ifname, key, old])
        self._write()

    def record_link_up(self, ifname: str) -> None:
        self.links_up.append(ifname)
        self._write()

    def record_table(self, family: str, table: str) -> None:
        if [family, table] not in self.tables:
            self.tables.append([family, table])
            self._write()

    def _write(self) -> None:
        doc = {"pid": os.getpid(), "offloads": self.offloads, "sysctls": self.sysctls,
               "links_up": self.links_up, "tables": self.tables}
        tmp = f"{self.path}.tmp{os.getpid()}"
        try:
            parent = os.path.dirname(os.path.abspath(self.path))
            os.makedirs(parent, mode=0o700, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(doc, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except OSError as e:
            if not self._warned:
                self._warned = True
                log.warning("host journal %s cannot be written (%s): if passnat is killed, the host "
                            "settings it changed are not restored by the next start", self.path, e.strerror or e)

    def remove(self) -> None:
        """Everything recorded has been put back: forget it."""
        self.offloads.clear()
        self.sysctls.clear()
        self.links_up.clear()
        self.tables.clear()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        except OSError as e:
            log.warning("cannot remove the host journal %s: %s", self.path, e.strerror or e)

    # ------------------------------------------------------------ recovery

    def recover(self) -> str | None:
        """Restore what a passnat that did not stop cleanly left changed (logged); a problem
        that must stop this start (the journal's daemon still runs), or None."""
        try:
            with open(self.path, encoding="utf-8") as f:
                doc = json.load(f)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, RecursionError) as e:
            log.warning("host journal %s unreadable (%s): removed; host settings of a killed passnat, "
                        "if any, are not restored", self.path, e)
            self.remove()
            return None
        pid = doc.get("pid") if isinstance(doc, dict) else None
        if isinstance(pid, int) and not isinstance(pid, bool) and pid != os.getpid() and _is_passnat(pid):
            return f"another passnat (pid {pid}) still runs with {self.path}; stop it first"
        undo, offloads, done = _undo_from(doc)
        log.warning("a previous passnat%s did not stop cleanly: restoring what it changed on the host (%s)",
                    f" (pid {pid})" if isinstance(pid, int) else "", "; ".join(done) or "nothing")
        from passnat.io import ethtool

        for state in offloads:
            ethtool.restore(state)
        undo.undo()
        self.remove()
        return None


def _is_passnat(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"passnat" in f.read()
    except OSError:
        return False


def _entries(doc: dict[str, Any], key: str) -> list[Any]:
    value = doc.get(key)
    return value if isinstance(value, list) else []


def _undo_from(doc: Any) -> tuple[HostUndo, list[Any], list[str]]:
    """The undo of a journal document, keeping only well-formed entries; and what it restores."""
    from passnat.io.ethtool import OffloadState

    undo, offloads, done = HostUndo(), [], []
    if not isinstance(doc, dict):
        return undo, offloads, done
    raw_offloads = doc.get("offloads")
    for ifname, v in (raw_offloads.items() if isinstance(raw_offloads, dict) else ()):
        if _ifname_ok(ifname) and isinstance(v, list) and len(v) == 2 and all(isinstance(x, bool) for x in v):
            offloads.append(OffloadState(ifname, v[0], v[1]))
            done.append(f"{ifname}: " + " and ".join(n for n, on in (("GRO", v[0]), ("LRO", v[1])) if on) + " on")
    for entry in _entries(doc, "sysctls"):
        if (isinstance(entry, list) and len(entry) == 3 and _ifname_ok(entry[0]) and entry[1] in _SYSCTL_KEYS
                and isinstance(entry[2], int) and not isinstance(entry[2], bool) and 0 <= entry[2] <= 255):
            undo.sysctls.append((entry[0], entry[1], entry[2]))
            done.append(f"net.ipv4.conf.{entry[0]}.{entry[1]}={entry[2]}")
    for ifname in _entries(doc, "links_up"):
        if _ifname_ok(ifname):
            undo.links_brought_up.append(ifname)
            done.append(f"{ifname} down")
    for entry in _entries(doc, "tables"):
        ok = isinstance(entry, list) and len(entry) == 2 and all(isinstance(x, str) for x in entry)
        flag = _TABLES.get((entry[0], entry[1])) if ok else None
        if flag is not None:
            setattr(undo, flag, True)
            done.append(f"nftables table {entry[0]} {entry[1]} deleted")
    return undo, offloads, done


@dataclass(slots=True)
class HostUndo:
    """What ``prepare`` changed, to put back with ``undo()`` (idempotent); with a ``journal``,
    ``undo()`` ends by removing it (everything recorded is back)."""

    sysctls: list[tuple[str, str, int]] = field(default_factory=list)  # (ifname, key, old value)
    links_brought_up: list[str] = field(default_factory=list)
    table_created: bool = False
    ingress_created: bool = False
    journal: HostJournal | None = None

    def undo(self) -> None:
        try:
            self._undo()
        finally:
            if self.journal is not None:
                self.journal.remove()
                self.journal = None

    def _undo(self) -> None:
        nft = shutil.which("nft")
        for flag, family, table in (("table_created", "inet", HANDOFF_TABLE),
                                    ("ingress_created", "netdev", INGRESS_TABLE)):
            if getattr(self, flag):
                if nft is not None:
                    subprocess.run([nft, "delete", "table", family, table], capture_output=True, check=False)
                setattr(self, flag, False)
        for ifname, key, old in reversed(self.sysctls):
            try:
                write_sysctl(ifname, key, old)
            except OSError as e:
                log.warning("cannot restore net.ipv4.conf.%s.%s=%d: %s", ifname, key, old, e.strerror)
        self.sysctls.clear()
        for ifname in self.links_brought_up:
            try:
                _set_link_up(ifname, False)
            except Exception as e:  # noqa: BLE001 -- pyroute2 raises its own errors; the rest still runs
                log.warning("cannot set %s down again: %s", ifname, e)
        self.links_brought_up.clear()


def _set_link_up(ifname: str, up: bool) -> None:
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        idx = ipr.link_lookup(ifname=ifname)
        if idx:
            ipr.link("set", index=idx[0], state="up" if up else "down")


#: what keepalived's VRRP needs from the kernel on passnat's interfaces (an HA pair, docs/ha.md):
#: VRRP advertisements (IP protocol 112 to 224.0.0.18) in and out
VRRP = "ip protocol vrrp ip daddr 224.0.0.18"


def handoff_ruleset(ifnames: list[str], vrrp: bool = False) -> str:
    """The nftables table of setup B for ``ifnames`` (``nft -f`` input); ``vrrp``: keepalived's
    advertisements still reach the kernel and leave it (accepted before the drop)."""
    names = ", ".join(json.dumps(n) for n in ifnames)
    keep_in = f"iifname {{ {names} }} {VRRP} accept; " if vrrp else ""
    keep_out = f"oifname {{ {names} }} {VRRP} accept; " if vrrp else ""
    return (f"table inet {HANDOFF_TABLE} {{\n"
            f"    chain in  {{ type filter hook input  priority -500; policy accept; "
            f"{keep_in}iifname {{ {names} }} drop; }}\n"
            f"    chain out {{ type filter hook output priority -500; policy accept; "
            f"{keep_out}oifname {{ {names} }} drop; }}\n"
            f"}}\n")


def ingress_ruleset(ifnames: list[str], vrrp: bool = False) -> str:
    """The ``netdev`` table whose ingress chains drop every frame after the AF_PACKET taps
    (``vrrp``: except keepalived's advertisements)."""
    keep = f" {VRRP} accept;" if vrrp else ""
    chains = "".join(f"    chain c{i} {{ type filter hook ingress device {json.dumps(n)} priority 0; "
                     f"policy drop;{keep} }}\n" for i, n in enumerate(ifnames))
    return f"table netdev {INGRESS_TABLE} {{\n{chains}}}\n"


def _nft_load(nft: str, family: str, table: str, text: str) -> None:
    subprocess.run([nft, "delete", "table", family, table], capture_output=True, check=False)
    res = subprocess.run([nft, "-f", "-"], input=text, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"nft -f failed: {res.stderr.strip()}")


def prepare(ifnames: list[str], journal: HostJournal | None = None, vrrp: bool = False) -> HostUndo:
    """Make setup B on ``ifnames``: link up, forwarding 0, arp_ignore 8, and the
    ``inet passnat_handoff`` table when any of them has kernel addresses.  Each original
    goes to ``journal`` (if given) before it is changed.  ``vrrp`` (an HA pair):
    keepalived's VRRP advertisements pass both tables.

    Raises OSError / RuntimeError when a step fails (what was done is undone)."""
    undo = HostUndo(journal=journal)
    try:
        for ifname in ifnames:
            if not link_info(ifname).up:
                if journal is not None:
                    journal.record_link_up(ifname)
                _set_link_up(ifname, True)
                undo.links_brought_up.append(ifname)
                log.info("%s: link set up", ifname)
            for key, want in (("forwarding", 0), ("arp_ignore", 8)):
                old = read_sysctl(ifname, key)
                if old is not None and old != want:
                    if journal is not None:
                        journal.record_sysctl(ifname, key, old)
                    write_sysctl(ifname, key, want)
                    undo.sysctls.append((ifname, key, old))
                    log.info("net.ipv4.conf.%s.%s: %d -> %d", ifname, key, old, want)
        nft = shutil.which("nft")
        if any(kernel_addresses(i) for i in ifnames):
            if nft is None:
                raise RuntimeError("nft not found: install nftables, or remove the kernel addresses")
            if journal is not None:
                journal.record_table("inet", HANDOFF_TABLE)
            _nft_load(nft, "inet", HANDOFF_TABLE, handoff_ruleset(ifnames, vrrp))
            undo.table_created = True
            log.info("nftables table inet %s installed for %s", HANDOFF_TABLE, ", ".join(ifnames))
        if nft is None:
            log.warning("nft not found: the kernel keeps processing the frames passnat handles (slower)")
        else:
            if journal is not None:
                journal.record_table("netdev", INGRESS_TABLE)
            _nft_load(nft, "netdev", INGRESS_TABLE, ingress_ruleset(ifnames, vrrp))
            undo.ingress_created = True
            log.info("nftables table netdev %s installed: the kernel skips frames on %s", INGRESS_TABLE,
                     ", ".join(ifnames))
    except BaseException:
        undo.undo()
        raise
    return undo


def is_root() -> bool:
    return os.geteuid() == 0
