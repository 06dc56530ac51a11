"""The lab's topology: who lives where, with which address (docs/lab.md draws it).

::

    pc1    192.168.0.11 ─┐                                         ┌─ srv1 203.0.113.10
    pc2    192.168.0.12 ─┤                                         │  (pptpd, strongSwan,
    pc3    192.168.0.13 ─┼─ lan [br0] ─ rlan  router  rwan ─ wan [br0]┤   ESP responder)
    lansrv 192.168.0.20 ─┘           (lan0)  passnat (lan1)         └─ srv2 203.0.113.20
                                 192.168.0.1        203.0.113.1

Every box is a network namespace named ``<prefix><box>``; ``lan`` and ``wan``
are pure layer-2 switches (a Linux bridge), so the router namespace has
exactly one LAN and one WAN interface.  The veth pairs are created directly
inside the namespaces, so nothing appears in the root namespace and the
interface names inside them (``eth0``, ``rlan``, ``rwan``, ``br0``, ``p-*``)
never clash between two labs.

Invariants:
  * the servers have no route to 192.168.0.0/24: anything that leaks out of
    the router untranslated gets no answer;
  * every veth has TSO, GSO and GRO off, like a physical wire (1500-byte
    frames, each one seen by the router);
  * IPv6 is off in every namespace (no RS/DAD/MLD noise);
  * ``build`` either completes or raises with everything it made removed.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from passnat.lab.proc import LabError, kill_namespace_pids, list_namespaces, nsrun, run

LAN_NET = "192.168.0.0/24"
ROUTER_LAN = "192.168.0.1"
ROUTER_WAN = "203.0.113.1"
PREFIX_LEN = 24
#: Linux names of the router's interfaces, and the configuration names they carry
ROUTER_LAN_IF = "rlan"
ROUTER_WAN_IF = "rwan"
CONFIG_LAN_IF = "lan0"
CONFIG_WAN_IF = "lan1"


@dataclass(frozen=True)
class Host:
    name: str
    addr: str
    side: str  # "lan" or "wan"

    @property
    def gateway(self) -> str | None:
        return ROUTER_LAN if self.side == "lan" else None


HOSTS: dict[str, Host] = {h.name: h for h in (
    Host("pc1", "192.168.0.11", "lan"),
    Host("pc2", "192.168.0.12", "lan"),
    Host("pc3", "192.168.0.13", "lan"),
    Host("lansrv", "192.168.0.20", "lan"),
    Host("srv1", "203.0.113.10", "wan"),
    Host("srv2", "203.0.113.20", "wan"),
)}
SWITCHES = ("lan", "wan")
ROUTER = "router"
#: the second router of the ``ha`` topology (an active/standby pair, docs/ha.md)
ROUTER2 = "router2"
#: every namespace suffix, in teardown order (hosts first, switches last)
BOXES = (*HOSTS, ROUTER, *SWITCHES)
HA_BOXES = (*HOSTS, ROUTER, ROUTER2, *SWITCHES)
HOST_IF = "eth0"
#: ``ha`` topology: each router's own kernel addresses (keepalived's VRRP) and the sync link
HA_KERNEL = {ROUTER: ("192.168.0.2", "203.0.113.2"), ROUTER2: ("192.168.0.3", "203.0.113.3")}
HA_SYNC_IF = "hasync"
HA_SYNC = {ROUTER: ("10.255.0.1", "10.255.0.2"), ROUTER2: ("10.255.0.2", "10.255.0.1")}

_PREFIX_RE = re.compile(r"^[a-z][a-z0-9]{0,9}-$")


def check_prefix(prefix: str) -> str:
    if not _PREFIX_RE.match(prefix):
        raise LabError(f"bad lab prefix {prefix!r}: 1-10 lower-case letters/digits, starting with a "
                       "letter, ending with '-' (e.g. 'pnlab-')")
    return prefix


class Topology:
    """Namespace names for one lab (``prefix``), and building/removing it.  ``ha``: two routers
    (``router`` and ``router2``) on the same switches, a sync link between them, each with kernel
    addresses of its own on both segments for keepalived's VRRP."""

    def __init__(self, prefix: str, ha: bool = False):
        self.prefix = check_prefix(prefix)
        self.ha = ha

    @property
    def boxes(self) -> tuple[str, ...]:
        return HA_BOXES if self.ha else BOXES

    def ns(self, box: str) -> str:
        if box not in self.boxes:
            raise LabError(f"no host {box!r} in the lab (hosts: {', '.join(self.boxes)})")
        return self.prefix + box

    @property
    def namespaces(self) -> list[str]:
        return [self.prefix + b for b in self.boxes]

    def existing(self) -> list[str]:
        """The lab's namespaces that exist now (found by exact name, never by a looser match;
        ``router2`` too, whichever topology this object was made for)."""
        mine = {self.prefix + b for b in HA_BOXES}
        return [n for n in list_namespaces() if n in mine]

    # ------------------------------------------------------------------ build

    def build(self) -> None:
        """Create namespaces, switches and wires; addresses for the hosts (not the router)."""
        if self.existing():
            raise LabError(f"lab {self.prefix!r} already exists ({', '.join(self.existing())}); "
                           f"remove it with: passnat lab down --prefix {self.prefix}")
        try:
            self._build()
        except BaseException:
            self.destroy()
            raise

    def _build(self) -> None:
        for ns in self.namespaces:
            run(["ip", "netns", "add", ns])
            nsrun(ns, ["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1",
                       "net.ipv6.conf.default.disable_ipv6=1"])
            run(["ip", "-n", ns, "link", "set", "lo", "up"])
        for sw in SWITCHES:
            ns = self.ns(sw)
            run(["ip", "-n", ns, "link", "add", "br0", "type", "bridge", "stp_state", "0",
                 "mcast_snooping", "0"])
            run(["ip", "-n", ns, "link", "set", "br0", "up"])
        for h in HOSTS.values():
            self._wire(self.ns(h.name), HOST_IF, h.side, f"p-{h.name}")
            ns = self.ns(h.name)
            run(["ip", "-n", ns, "addr", "add", f"{h.addr}/{PREFIX_LEN}", "dev", HOST_IF])
            if h.gateway:
                run(["ip", "-n", ns, "route", "add", "default", "via", h.gateway])
        for r in (ROUTER, ROUTER2) if self.ha else (ROUTER,):
            self._wire(self.ns(r), ROUTER_LAN_IF, "lan", f"p-{r}")
            self._wire(self.ns(r), ROUTER_WAN_IF, "wan", f"p-{r}")
            # the router namespace forwards nothing by itself; a router backend decides
            nsrun(self.ns(r), ["sysctl", "-qw", "net.ipv4.ip_forward=0",
                               "net.ipv4.conf.all.send_redirects=0",
                               "net.ipv4.conf.default.send_redirects=0"])
        if self.ha:
            run(["ip", "link", "add", HA_SYNC_IF, "netns", self.ns(ROUTER), "type", "veth", "peer", "name",
                 HA_SYNC_IF, "netns", self.ns(ROUTER2)])
            for r in (ROUTER, ROUTER2):
                ns = self.ns(r)
                run(["ip", "-n", ns, "addr", "add", f"{HA_SYNC[r][0]}/30", "dev", HA_SYNC_IF])
                run(["ip", "-n", ns, "link", "set", HA_SYNC_IF, "up"])

    def _wire(self, ns: str, ifname: str, switch: str, port: str) -> None:
        """A veth "cable" from ``ns``:``ifname`` to switch port ``port``, offloads off."""
        swns = self.ns(switch)
        run(["ip", "link", "add", ifname, "netns", ns, "type", "veth", "peer", "name", port,
             "netns", swns])
        run(["ip", "-n", swns, "link", "set", port, "master", "br0"])
        for n, i in ((ns, ifname), (swns, port)):
            nsrun(n, ["ethtool", "-K", i, "tso", "off", "gso", "off", "gro", "off"])
            run(["ip", "-n", n, "link", "set", i, "up"])

    # ---------------------------------------------------------------- destroy

    def destroy(self) -> list[str]:
        """Stop every process in the lab's namespaces (by pid) and delete them."""
        present = self.existing()
        kill_namespace_pids(present)
        for ns in present:
            run(["ip", "netns", "del", ns], check=False)
        return present
