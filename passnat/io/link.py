"""One interface the daemon owns: its sockets, its ARP table and its counters.

A ``Link`` ties a configuration interface (``name``, e.g. lan0) to a Linux
interface (``linux``): the receive ring and send socket (afpacket), the ARP
neighbour table, the receive-offload state to restore at stop, and the
per-interface packet/byte counters ``show counters`` prints.

The daemon's C receive loop (``passnat._speedups.ring_rx``) counts into
``fast_state``, an ``array('q')`` it writes without calling Python;
``fold_fast_state()`` adds those counts to the attributes above (``stats()``
calls it, so what an operator reads is exact, and the daemon every second).  Send errors are counted by errno (``tx_error_<ERRNO>``, and the total
``tx_error``); the first of each kind on an interface is logged, then at most
one line a minute per kind.

Invariant: ``open()`` either leaves every resource open or none; ``close()``
restores the offload settings it changed and may be called more than once.
"""
from __future__ import annotations

import errno as errnos
import logging
import time
from array import array
from collections import Counter
from collections.abc import Callable
from typing import Any

from passnat.io import ethtool
from passnat.io.afpacket import LinkInfo, RingGeometry, RxRing, TxSocket, link_info, link_qdisc
from passnat.io.linkdrops import LinkDrop
from passnat.io.neighbours import ArpTimers, NeighbourTable
from passnat.io.offload import VNET_NONE
from passnat.io.shed import Shedder, adjust

log = logging.getLogger("passnat.io.link")

#: _speedups.c ST_*: rx packets, rx bytes, partial checksums, tx packets, tx bytes, tx errors,
#: frames forwarded in C, callback errors, the ring's head (the next slot to read; not a count),
#: then tx errors by errno (ST_ERRNO + errno, < 128)
ST_RX_PACKETS, ST_RX_BYTES, ST_PARTIAL, ST_TX_PACKETS, ST_TX_BYTES, ST_TX_ERRORS, ST_FAST, ST_CB_ERRORS, \
    ST_HEAD = range(9)
ST_ERRNO = 9
FAST_STATE_LEN = ST_ERRNO + 128
_DEFAULT_GEOMETRY = RingGeometry()


def errnos_text(err: int) -> str:
    import os
    try:
        return os.strerror(err) if err else "unknown error"
    except ValueError:
        return "unknown error"
_DEFAULT_ARP = ArpTimers()
SHED_ON_AFTER = 0.05  # s the receive ring stays 3/4 full before the shedding program goes on
SHED_OFF_AFTER = 0.25  # s without shedding before it comes off again
SHED_TURN = 0.05  # s: the longest an idle loop waits while the shedding program is on (so it comes off on time)
SHED_PROBE_AFTER = 1.0  # s on at most, then off to see whether passnat keeps up without it
SHED_EPISODE_END = 5.0  # s off before an overload counts as over (one log line per overload)


class Link:
    def __init__(self, name: str, linux: str, *, geometry: RingGeometry = _DEFAULT_GEOMETRY,
                 arp_timers: ArpTimers = _DEFAULT_ARP, shed: bool = False):
        self.name = name
        self.want_shed = shed  # attach the load-shedding XDP program (passnat/io/shed.py)
        self.shed: Shedder | None = None
        self._full_since = 0.0  # time.monotonic() since the ring stays 3/4 full (0: it does not)
        self._shed_on_at = 0.0  # when the shedding program last went on
        self._shed_needed_at = 0.0  # the last turn it had a level above 0
        self._shed_off_at = 0.0  # when it last came off
        self._shed_episode: int | None = None  # frames shed before this overload began (None: no overload)
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
        self.rx_fast = 0  # frames forwarded by the C receive loop (received on this link)
        #: what ring_rx counts for this link (ST_*), folded into the attributes by fold_fast_state
        self.fast_state = array("q", bytes(8 * FAST_STATE_LEN))
        self.polled = False  # poll() reported the ring readable since the last walk
        self.slow_cb: Any = None  # the daemon's slow(offset, now) for this link's frames
        self.resync_logged = False
        self._tx_logged: dict[int, float] = {}
        self.counters: Counter[str] = Counter()
        self.superframe_logged = False
        self.qdisc: str | None = None
        #: called with the offloads about to be switched off, before they are (hostsetup.HostJournal)
        self.on_offloads: Callable[[ethtool.OffloadState], None] | None = None

    def open(self) -> None:
        info = link_info(self.linux)
        self.info = info
        self.mtu = info.mtu
        try:
            self.offloads = ethtool.disable_receive_offloads(self.linux, self.on_offloads)
            self.ring = RxRing(self.linux, self.geometry, info.mtu)
            self.qdisc = link_qdisc(self.linux)
            self.tx = TxSocket(self.linux, qdisc_bypass=self.qdisc == "noqueue")
        except BaseException:
            self.close()
            raise
        if self.want_shed:
            shedder = Shedder(self.linux)
            try:
                shedder.load()
                self.shed = shedder
            except OSError as e:
                log.warning("%s: load shedding off: the kernel refused its XDP program on %s (%s); under an "
                            "overload the kernel's receive work for frames the full ring then drops takes "
                            "passnat's CPU (docs/daemon.md)", self.name, self.linux, e.strerror or e)
        self.neigh = NeighbourTable(self.name, info.mac, self.arp_timers, prefix=VNET_NONE)
        log.info("%s: attached to %s (mac %s, mtu %d, ring %d x %d bytes, qdisc %s%s, load shedding %s)",
                 self.name, self.linux, ":".join(f"{b:02x}" for b in info.mac), info.mtu, self.ring.frame_nr,
                 self.ring.frame_size, self.qdisc,
                 ": sending with PACKET_QDISC_BYPASS" if self.qdisc == "noqueue" else "",
                 "by XDP under overload" if self.shed is not None else "off")

    def send(self, frame: bytes) -> bool:
        """Send one frame (it starts with a virtio_net_hdr); False (counted) when the kernel
        refuses it."""
        assert self.tx is not None
        try:
            self.tx.send(frame)
        except OSError as e:
            self.tx_failed(e.errno or 0)
            return False
        self.tx_packets += 1
        self.tx_bytes += len(frame) - len(VNET_NONE)
        return True

    def tx_failed(self, err: int, n: int = 1) -> None:
        """Count ``n`` frames the kernel refused with errno ``err`` (and log the kind)."""
        self.counters[LinkDrop.TX_ERROR.value] += n
        name = errnos.errorcode.get(err, str(err)) if err else "unknown"
        self.counters[f"tx_error_{name}"] += n
        mono = time.monotonic()
        last = self._tx_logged.get(err)
        if last is None or mono - last >= 60.0:
            self._tx_logged[err] = mono
            log.warning("%s (%s): the kernel refused to send %s (%s: %s); counted as tx_error_%s%s", self.name,
                        self.linux, "a frame" if n == 1 else f"{n} frames", name, errnos_text(err), name,
                        "" if last is None else " (at most one such line a minute)")

    def fold_fast_state(self) -> None:
        """Add what the C receive loop counted in ``fast_state`` to the link's counters."""
        st = self.fast_state
        if st[ST_RX_PACKETS] or st[ST_TX_PACKETS] or st[ST_TX_ERRORS] or st[ST_CB_ERRORS]:
            self.rx_packets += st[ST_RX_PACKETS]
            self.rx_bytes += st[ST_RX_BYTES]
            self.csum_partial += st[ST_PARTIAL]
            self.tx_packets += st[ST_TX_PACKETS]
            self.tx_bytes += st[ST_TX_BYTES]
            self.rx_fast += st[ST_FAST]
            if st[ST_CB_ERRORS]:
                self.counters[LinkDrop.INTERNAL_ERROR.value] += st[ST_CB_ERRORS]
            if st[ST_TX_ERRORS]:
                for err in range(128):
                    n = st[ST_ERRNO + err]
                    if n:
                        self.tx_failed(err, n)
                        st[ST_ERRNO + err] = 0
            for i in range(ST_HEAD):
                st[i] = 0

    def ring_fill(self) -> float:
        """Roughly how full the receive ring is ahead of passnat's position (0, 1/8, 1/4, 1/2, 3/4):
        a few slots probed, no walk."""
        ring = self.ring
        if ring is None:
            return 0.0
        mm, size, nr, head = ring.mm, ring.frame_size, ring.frame_nr, self.fast_state[ST_HEAD]
        fill = 0.0
        for f in (0.125, 0.25, 0.5, 0.75):
            if not mm[((head + int(f * nr)) % nr) * size] & 1:
                break
            fill = f
        return fill

    def shed_turn(self, busy: bool) -> None:
        """After a walk of the rings (``busy``: the walk used its whole budget): the shedding program
        goes on when the ring has stayed three quarters full for ``SHED_ON_AFTER`` (frames are being
        lost at the full ring: an overload, not a burst), its level follows how full the ring stays,
        and it comes off when it has shed nothing for ``SHED_OFF_AFTER`` or has been on for
        ``SHED_PROBE_AFTER`` -- on veth passnat forwards a third more without it, so a load between the
        two peaks must find it off (if the overload goes on, it is back on ``SHED_ON_AFTER`` later)."""
        shed = self.shed
        if shed is None:
            return
        mono = time.monotonic()
        if not shed.attached:
            if not busy or self.ring_fill() < 0.75:
                self._full_since = 0.0
                if self._shed_episode is not None and mono - self._shed_off_at >= SHED_EPISODE_END:
                    log.info("%s: load shedding off again: %d frames shed during the overload", self.name,
                             shed.shed - self._shed_episode)
                    self._shed_episode = None
            elif not self._full_since:
                self._full_since = mono
            elif mono - self._full_since >= SHED_ON_AFTER:
                self._full_since = 0.0
                try:
                    shed.attach()
                except OSError as e:
                    log.warning("%s: load shedding off: the kernel refused its XDP program on %s (%s)", self.name,
                                self.linux, e.strerror or e)
                    self.counters[LinkDrop.SHED.value] = shed.shed
                    shed.close()
                    self.shed = None
                    return
                self._shed_on_at = self._shed_needed_at = mono
                if self._shed_episode is None:
                    self._shed_episode = shed.shed
                    log.info("%s: overloaded (frames lost at the full receive ring): load shedding on", self.name)
            return
        if shed.level:
            self._shed_needed_at = mono
        if mono - self._shed_needed_at >= SHED_OFF_AFTER or mono - self._shed_on_at >= SHED_PROBE_AFTER:
            shed.detach()
            self._shed_off_at = mono
            return
        if not busy and not shed.level:
            return
        if shed.level and mono - shed.set_at > 0.1:
            shed.set_level(0)  # a pause since: the program ignores an old level anyway; start afresh
        level = adjust(shed.level, self.ring_fill() if busy else 0.0)
        if level != shed.level:
            shed.set_level(level)
        else:
            shed.keepalive()

    def ring_stats(self) -> tuple[int, int, int]:
        if self.ring is None:
            return 0, 0, 0
        try:
            return self.ring.ring_stats()
        except OSError:
            return self.ring.total_packets, self.ring.total_drops, self.ring.total_freezes

    def stats(self) -> dict[str, Any]:
        """Per-interface figures for ``show counters``."""
        self.fold_fast_state()
        if self.shed is not None:
            self.counters[LinkDrop.SHED.value] = self.shed.shed
        packets, drops, freezes = self.ring_stats()
        return {"linux": self.linux, "rx_packets": self.rx_packets, "rx_bytes": self.rx_bytes,
                "tx_packets": self.tx_packets, "tx_bytes": self.tx_bytes, "ring_packets": packets,
                "ring_drops": drops, "ring_freezes": freezes,
                "counters": dict(self.counters) | (dict(self.neigh.counters) if self.neigh else {})
                | {"rx_checksum_partial": self.csum_partial, "rx_fast_path": self.rx_fast}}

    def close(self) -> None:
        """Detach the shedding program, close the sockets and restore the offloads -- the offloads
        even when a close fails."""
        ring, self.ring = self.ring, None
        tx, self.tx = self.tx, None
        offloads, self.offloads = self.offloads, None
        shed, self.shed = self.shed, None
        try:
            if shed is not None:
                if shed.mm is not None:
                    self.counters[LinkDrop.SHED.value] = shed.shed
                shed.close()
            if ring is not None:
                ring.close()
        finally:
            try:
                if tx is not None:
                    tx.close()
            finally:
                if offloads is not None:
                    ethtool.restore(offloads)
