"""One interface the daemon owns: its sockets, its ARP table and its counters.

A ``Link`` ties a configuration interface (``name``, e.g. lan0) to a Linux
interface (``linux``): the receive ring and send socket (afpacket), the ARP
neighbour table, the receive-offload state to restore at stop, and the
per-interface packet/byte counters ``show counters`` prints.

The daemon's C ring path (``passnat._speedups.ring_forward``) counts into
``fast_state``, an ``array('q')`` it writes without calling Python;
``fold_fast_state()`` adds those counts to the attributes above (the daemon
calls it after every ring block, so they are exact whenever Python reads them).

Invariant: ``open()`` either leaves every resource open or none; ``close()``
restores the offload settings it changed and may be called more than once.
"""
from __future__ import annotations

import logging
from array import array
from collections import Counter
from typing import Any

from passnat.io import ethtool
from passnat.io.afpacket import LinkInfo, RingGeometry, RxRing, TxSocket, link_info, link_qdisc
from passnat.io.neighbours import ArpTimers, NeighbourTable
from passnat.io.offload import VNET_NONE

log = logging.getLogger("passnat.io.link")

FAST_STATE_LEN = 8
_DEFAULT_GEOMETRY = RingGeometry()
_DEFAULT_ARP = ArpTimers()


class Link:
    def __init__(self, name: str, linux: str, *, geometry: RingGeometry = _DEFAULT_GEOMETRY,
                 arp_timers: ArpTimers = _DEFAULT_ARP):
        self.name = name
        self.linux = linux
        self.geometry = geometry
        self.arp_timers = arp_timers
        self.info: LinkInfo | None = None
        self.ring: RxRing | None = None
        self.tx: TxSocket | None = None
        self.neigh: NeighbourTable | None = None
        self.offloads: ethtool.OffloadState | None = None
        self.mtu = 1500
        self.rx_packets = 0
        self.rx_bytes = 0
        self.tx_packets = 0
        self.tx_bytes = 0
        self.csum_partial = 0
        self.rx_fast = 0  # frames forwarded by the C ring path (received on this link)
        #: ring_forward's state: next frame offset, frames left (in and out), then the counts it
        #: adds: rx bytes, rx partial checksums, tx packets, tx bytes, tx errors, frames it
        #: forwarded (_speedups.c ST_*)
        self.fast_state = array("q", bytes(8 * FAST_STATE_LEN))
        self.counters: Counter[str] = Counter()
        self.superframe_logged = False
        self.qdisc: str | None = None

    def open(self) -> None:
        info = link_info(self.linux)
        self.info = info
        self.mtu = info.mtu
        try:
            self.offloads = ethtool.disable_receive_offloads(self.linux)
            self.ring = RxRing(self.linux, self.geometry)
            self.qdisc = link_qdisc(self.linux)
            self.tx = TxSocket(self.linux, qdisc_bypass=self.qdisc == "noqueue")
        except BaseException:
            self.close()
            raise
        self.neigh = NeighbourTable(self.name, info.mac, self.arp_timers, prefix=VNET_NONE)
        log.info("%s: attached to %s (mac %s, mtu %d, ring %d x %d KiB, qdisc %s%s)", self.name, self.linux,
                 ":".join(f"{b:02x}" for b in info.mac), info.mtu, self.geometry.block_nr,
                 self.geometry.block_size // 1024, self.qdisc,
                 ": sending with PACKET_QDISC_BYPASS" if self.qdisc == "noqueue" else "")

    def send(self, frame: bytes) -> bool:
        """Send one frame (it starts with a virtio_net_hdr); False (counted) when the kernel
        refuses it."""
        assert self.tx is not None
        try:
            self.tx.send(frame)
        except OSError:
            self.counters["tx_error"] += 1
            return False
        self.tx_packets += 1
        self.tx_bytes += len(frame) - len(VNET_NONE)
        return True

    def fold_fast_state(self) -> None:
        """Add what the C ring path counted in ``fast_state`` to the link's counters."""
        st = self.fast_state
        if st[2] or st[4] or st[6]:
            self.rx_bytes += st[2]
            self.csum_partial += st[3]
            self.tx_packets += st[4]
            self.tx_bytes += st[5]
            if st[6]:
                self.counters["tx_error"] += st[6]
            self.rx_fast += st[7]
            st[2] = st[3] = st[4] = st[5] = st[6] = st[7] = 0

    def ring_stats(self) -> tuple[int, int, int]:
        if self.ring is None:
            return 0, 0, 0
        try:
            return self.ring.ring_stats()
        except OSError:
            return self.ring.total_packets, self.ring.total_drops, self.ring.total_freezes

    def stats(self) -> dict[str, Any]:
        """Per-interface figures for ``show counters``."""
        packets, drops, freezes = self.ring_stats()
        return {"linux": self.linux, "rx_packets": self.rx_packets, "rx_bytes": self.rx_bytes,
                "tx_packets": self.tx_packets, "tx_bytes": self.tx_bytes, "ring_packets": packets,
                "ring_drops": drops, "ring_freezes": freezes,
                "counters": dict(self.counters) | (dict(self.neigh.counters) if self.neigh else {})
                | {"rx_checksum_partial": self.csum_partial, "rx_fast_path": self.rx_fast}}

    def close(self) -> None:
        if self.ring is not None:
            self.ring.close()
            self.ring = None
        if self.tx is not None:
            self.tx.close()
            self.tx = None
        if self.offloads is not None:
            ethtool.restore(self.offloads)
            self.offloads = None
