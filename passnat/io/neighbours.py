"""The ARP neighbour table of one interface (RFC 826, RFC 1122 §2.3.2): sans-IO.

The daemon asks ``output(next_hop, packet, origin, now)`` for the frames to send
for one IPv4 packet; the table answers from its cache, or queues the packet and
returns the ARP request that resolves the next hop.  ``on_arp`` takes every ARP
packet received on the interface (answers requests for the router's addresses,
learns senders, releases queued packets), ``on_timer`` drives retries and
ageing.  Packets whose resolution failed are collected in ``failed`` (with the
caller's ``origin``) so the daemon can send ICMP host unreachable.

States (Linux-like, simplified):

  ``incomplete``  resolving: broadcast request every ``interval`` s, at most
                  ``retries`` times; packets wait in a bounded queue.
  ``reachable``   confirmed less than ``reachable_time`` s ago: used as is.
  ``stale``       older: still used, but the first use starts ``probe``.
  ``probe``       used while unicast requests re-confirm it; no answer after
                  ``retries`` requests deletes it.
  ``failed``      resolution failed: packets fail at once for ``interval`` s.
  ``permanent``   broadcast addresses (never expire).

Invariants:
  * ``fast`` maps next-hop text to the ready frame prefix (``prefix`` + the
    14-byte Ethernet header) exactly for the entries in states reachable, probe
    and permanent (the daemon's per-packet lookup is one dict get).  Every
    frame the table returns starts with ``prefix`` too (the daemon's send
    socket wants a ``virtio_net_hdr`` in front of each frame).
  * At most ``queue_per_neighbour`` packets wait per neighbour (the oldest is
    dropped, RFC 1122 §2.3.2.2 "SHOULD save at least one") and at most
    ``queue_total`` on the interface; every dropped packet is counted.
  * Timers are kept in a heap with lazy invalidation: an entry's ``deadline``
    is authoritative, heap items that disagree with it are skipped.
"""
from __future__ import annotations

import heapq
import ipaddress
import logging
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from passnat.io.ether import (
    ARP_REPLY,
    ARP_REQUEST,
    BROADCAST,
    ETH_P_IP,
    ZERO_MAC,
    Arp,
    build_arp_frame,
    eth_header,
    gratuitous_arp,
    mac_text,
)

log = logging.getLogger("passnat.io.arp")

INCOMPLETE = "incomplete"
REACHABLE = "reachable"
STALE = "stale"
PROBE = "probe"
FAILED = "failed"
PERMANENT = "permanent"


@dataclass(slots=True)
class Neighbour:
    ip: int
    text: str
    state: str
    mac: bytes | None = None
    confirmed: float = 0.0
    probes: int = 0
    deadline: float = float("inf")
    queue: deque[tuple[bytes, Any]] = field(default_factory=deque)


@dataclass(frozen=True, slots=True)
class ArpTimers:
    """Tunables; the defaults follow Linux's neighbour defaults where one exists."""

    reachable_time: float = 30.0  # Linux base_reachable_time
    gc_time: float = 300.0  # an unused stale entry is forgotten after this long
    interval: float = 1.0  # Linux retrans_time
    retries: int = 3  # Linux mcast_solicit / ucast_solicit
    queue_per_neighbour: int = 64
    queue_total: int = 1024


class NeighbourTable:
    """ARP state of one interface (``name``) whose MAC address is ``mac``."""

    def __init__(self, name: str, mac: bytes, timers: ArpTimers = ArpTimers(), prefix: bytes = b""):
        self.name = name
        self.mac = mac
        self.prefix = prefix
        self.timers = timers
        self.entries: dict[int, Neighbour] = {}
        self.fast: dict[str, bytes] = {}
        self.failed: list[tuple[bytes, Any]] = []
        self.counters: Counter[str] = Counter()
        self.queued = 0
        self._heap: list[tuple[float, int]] = []
        self._nets: list[tuple[int, int, int]] = []  # (address, network, mask) of the interface
        self.owned: frozenset[int] = frozenset()

    # ------------------------------------------------------------ addresses

    def set_addresses(self, interface_addrs: list[ipaddress.IPv4Interface], owned: set[str]) -> None:
        """The interface's own prefixes (for request sources and broadcasts) and every
        address the router answers ARP for on this link (interface + NAT globals)."""
        self._nets = [(int(a.ip), int(a.network.network_address), int(a.network.netmask))
                      for a in interface_addrs]
        self.owned = frozenset(int(ipaddress.IPv4Address(a)) for a in owned)
        for ip in [ip for ip, e in self.entries.items() if e.state == PERMANENT]:
            self._delete(self.entries[ip])
        bcast = {0xFFFFFFFF}
        for a in interface_addrs:
            if a.network.prefixlen < 31:
                bcast.add(int(a.network.broadcast_address))
        for ip in bcast:
            e = Neighbour(ip, str(ipaddress.IPv4Address(ip)), PERMANENT, BROADCAST)
            self.entries[ip] = e
            self.fast[e.text] = self.prefix + eth_header(BROADCAST, self.mac, ETH_P_IP)

    def source_for(self, target: int) -> int:
        """The router's address to put in a request for ``target`` (same subnet first)."""
        for addr, net, mask in self._nets:
            if target & mask == net:
                return addr
        return self._nets[0][0] if self._nets else 0

    def announcements(self, only: set[str] | None = None) -> list[bytes]:
        """Gratuitous ARP for every owned address (at start), or for those in ``only``
        (addresses new after a reload)."""
        return [self.prefix + gratuitous_arp(self.mac, ip) for ip in sorted(self.owned)
                if only is None or _text(ip) in only]

    # ------------------------------------------------------------ sending

    def output(self, next_hop: str, packet: bytes, origin: Any, now: float) -> list[bytes]:
        """Frames to send now for ``packet`` towards ``next_hop`` (a cache miss path:
        call it only when ``fast`` has no header for ``next_hop``)."""
        next_hop = str(next_hop)  # an exact str key (the engine's may be a subclass with its own __eq__)
        hdr = self.fast.get(next_hop)
        if hdr is not None:
            return [hdr + packet]
        try:
            ip = int(ipaddress.IPv4Address(next_hop))
        except ValueError:
            self.counters["arp_bad_next_hop"] += 1
            return []
        e = self.entries.get(ip)
        if e is None:
            e = Neighbour(ip, next_hop, INCOMPLETE)
            self.entries[ip] = e
            self._enqueue(e, packet, origin)
            return [self._request(e, now, broadcast=True)]
        if e.state == INCOMPLETE:
            self._enqueue(e, packet, origin)
            return []
        if e.state == FAILED:
            self.counters["arp_unresolved"] += 1
            self.failed.append((packet, origin))
            return []
        # stale: use it and start probing (its header goes back into the fast map)
        assert e.mac is not None
        e.state = PROBE
        e.probes = 0
        hdr = self.prefix + eth_header(e.mac, self.mac, ETH_P_IP)
        self.fast[e.text] = hdr
        return [hdr + packet, self._request(e, now, broadcast=False)]

    def _enqueue(self, e: Neighbour, packet: bytes, origin: Any) -> None:
        if self.queued >= self.timers.queue_total:
            self.counters["arp_queue_full"] += 1
            return
        if len(e.queue) >= self.timers.queue_per_neighbour:
            e.queue.popleft()
            self.queued -= 1
            self.counters["arp_queue_full"] += 1
        e.queue.append((packet, origin))
        self.queued += 1

    def _request(self, e: Neighbour, now: float, *, broadcast: bool) -> bytes:
        e.probes += 1
        self._set_deadline(e, now + self.timers.interval)
        self.counters["arp_requests_sent"] += 1
        dst = BROADCAST if broadcast or e.mac is None else e.mac
        return self.prefix + build_arp_frame(op=ARP_REQUEST, src_mac=self.mac, sender_ip=self.source_for(e.ip),
                                             target_mac=ZERO_MAC, target_ip=e.ip, dst_mac=dst)

    # ------------------------------------------------------------ receiving

    def on_arp(self, arp: Arp, now: float) -> list[bytes]:
        """Handle one received ARP packet; frames to send (a reply, released packets)."""
        out: list[bytes] = []
        spa, sha = arp.sender_ip, arp.sender_mac
        if sha == self.mac or sha == BROADCAST or sha[0] & 1:
            self.counters["arp_ignored"] += 1
            return out
        if spa in self.owned:
            if spa != 0 and arp.op == ARP_REQUEST and arp.target_ip == spa:
                log.warning("%s: another host (%s) announces %s, an address this router owns",
                            self.name, mac_text(sha), _text(spa))
            self.counters["arp_conflict"] += 1
            return out
        for_us = arp.target_ip in self.owned
        e = self.entries.get(spa) if spa else None
        if e is not None and e.state != PERMANENT:
            out.extend(self._confirm(e, sha, now))
        elif e is None and for_us and spa:
            e = Neighbour(spa, _text(spa), REACHABLE)
            self.entries[spa] = e
            out.extend(self._confirm(e, sha, now))
        if arp.op == ARP_REQUEST and for_us:
            self.counters["arp_replies_sent"] += 1
            out.append(self.prefix + build_arp_frame(op=ARP_REPLY, src_mac=self.mac, sender_ip=arp.target_ip,
                                                     target_mac=sha, target_ip=spa))
        return out

    def _confirm(self, e: Neighbour, mac: bytes, now: float) -> list[bytes]:
        if e.mac is not None and e.mac != mac:
            log.info("%s: neighbour %s moved from %s to %s", self.name, e.text, mac_text(e.mac), mac_text(mac))
        e.mac = mac
        e.state = REACHABLE
        e.confirmed = now
        e.probes = 0
        hdr = self.prefix + eth_header(mac, self.mac, ETH_P_IP)
        self.fast[e.text] = hdr
        self._set_deadline(e, now + self.timers.reachable_time)
        released = [hdr + p for p, _origin in e.queue]
        self.queued -= len(e.queue)
        e.queue.clear()
        return released

    # ------------------------------------------------------------ timers

    def _set_deadline(self, e: Neighbour, when: float) -> None:
        e.deadline = when
        heapq.heappush(self._heap, (when, e.ip))

    def next_deadline(self) -> float | None:
        heap = self._heap
        while heap:
            when, ip = heap[0]
            e = self.entries.get(ip)
            if e is not None and e.deadline == when:
                return when
            heapq.heappop(heap)
        return None

    def on_timer(self, now: float) -> list[bytes]:
        """Retries, ageing and failures due at ``now``; the ARP requests to send."""
        out: list[bytes] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            when, ip = heapq.heappop(heap)
            e = self.entries.get(ip)
            if e is None or e.deadline != when:
                continue
            if e.state in (INCOMPLETE, PROBE):
                if e.probes < self.timers.retries:
                    out.append(self._request(e, now, broadcast=e.state == INCOMPLETE))
                else:
                    self._fail(e, now)
            elif e.state == REACHABLE:
                e.state = STALE
                self.fast.pop(e.text, None)
                self._set_deadline(e, e.confirmed + self.timers.gc_time)
            else:  # stale past gc_time, failed hold-down over
                self._delete(e)
        return out

    def _fail(self, e: Neighbour, now: float) -> None:
        self.counters["arp_resolution_failed"] += 1
        if e.queue:
            log.info("%s: no ARP reply from %s; %d queued packet(s) dropped", self.name, e.text, len(e.queue))
            self.counters["arp_unresolved"] += len(e.queue)
        self.failed.extend(e.queue)
        self.queued -= len(e.queue)
        e.queue.clear()
        e.state = FAILED
        e.mac = None
        self.fast.pop(e.text, None)
        self._set_deadline(e, now + self.timers.interval)

    def _delete(self, e: Neighbour) -> None:
        self.entries.pop(e.ip, None)
        self.fast.pop(e.text, None)
        self.queued -= len(e.queue)
        e.queue.clear()
        e.deadline = float("inf")

    # ------------------------------------------------------------ reporting

    def records(self, now: float) -> list[dict[str, Any]]:
        """``show arp`` records for this interface (permanent broadcast entries omitted)."""
        recs = []
        for e in sorted(self.entries.values(), key=lambda x: x.ip):
            if e.state == PERMANENT:
                continue
            recs.append({"interface": self.name, "address": e.text,
                         "mac": mac_text(e.mac) if e.mac is not None else None, "state": e.state,
                         "age": round(now - e.confirmed, 1) if e.confirmed else None,
                         "queued": len(e.queue)})
        return recs


def _text(ip: int) -> str:
    return str(ipaddress.IPv4Address(ip))
