"""``passnat run``: the router on real interfaces (one process, one thread, one loop).

Start (``start``): open every link (GRO/LRO off, TPACKET_V2 receive ring, send
socket), build the engine, import saved sessions, open the control socket,
announce the router's addresses with gratuitous ARP.

Loop (``run``), one turn:
  1. ``poll`` the rings, the control socket and the signal pipe, with a
     timeout up to the next deadline (engine, ARP, housekeeping; at most 1 s);
  2. walk the links' receive rings (TPACKET_V2, afpacket.py), taking turns,
     at most ``budget`` frames (512) in all; when the budget ran out the next
     poll does not wait, so the control socket and the timers are served
     between bounded bursts, and excess is dropped by the kernel at the full
     ring (counted, ``PACKET_STATISTICS``) instead of starving the loop;
  3. engine timers (``router.on_timer`` when ``router.deadline`` is reached:
     a cached minimum, not a scan), ARP retries/ageing, ICMP host unreachable
     for packets whose next hop never answered ARP;
  4. a pending SIGHUP reload or SIGTERM/SIGINT stop;
  5. once a second, housekeeping: control connections that timed out, and the
     periodic ``--state-file`` save (statefile.Saver, in a forked child).

The receive loop in C: when ``passnat._speedups`` is built (and
``PASSNAT_PURE`` is not set), ``_drain_all`` hands every ring to ``ring_rx``.
The links take turns, 64 frames each, until no frame waits (after traffic it
keeps looking for ``spin_us``, 50 µs, before it sleeps: a reply that follows
closely needs no wake-up) or 512 frames were walked.  When every frame it
walked was an established flow's, it sleeps in ``poll`` itself, on every
descriptor the reactor watches, until the loop's next turn is due
(``_until``: timers, housekeeping); a frame that arrives is walked at once,
and anything else (the control socket, a signal, the time) returns to the
loop.  That spares an established flow's packet the wake-up through the
Python loop (~0.08 ms on the bench VM, docs/daemon.md).  The pure-Python
twin (``_walk_python``) never sleeps: the loop's own ``poll`` does.  It
forwards established TCP/UDP flows and ICMP echo whose next hop is resolved
-- the engine's fast path plus ``_send``, same bytes, same counters --
straight from the ring slot to the egress socket (``sendmmsg`` batches), and
hands every other frame to ``_frame`` (the Python path below) after sending
what it queued before it: each frame is handled by exactly one of the two,
and the frames go out in the order the Python loop alone would send them.
With a capture being written, or when the engine's timers are due, every
frame goes to ``_frame``.  Its counts go to each link's ``fast_state`` and
are folded into the link's counters every second and whenever they are read.

Time: the engine and the ARP tables get ``time.monotonic()``, read once per
walk of a ring (the engine never reads a clock; statefile.py adds the
downtime when sessions are restored).

Invariants: no exception from one packet stops the loop (counted as
``internal_error`` and logged with its traceback, rate limited); stop
restores the links (offload settings) and removes the control socket.
"""
from __future__ import annotations

import functools
import gc
import ipaddress
import logging
import signal
import socket
import struct
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from passnat.config import ConfigError, parse_config
from passnat.config.model import Config
from passnat.control import views
from passnat.control.protocol import ProtocolError
from passnat.control.server import ControlServer
from passnat.io import statefile
from passnat.io.afpacket import TP_STATUS_COPY, TP_STATUS_CSUMNOTREADY, TP_STATUS_VLAN_VALID, RingGeometry
from passnat.io.capture import Capture
from passnat.io.ether import parse_arp
from passnat.io.hostsetup import Attachment, HostUndo
from passnat.io.link import SHED_TURN, ST_HEAD, ST_RX_BYTES, ST_RX_PACKETS, Link
from passnat.io.linkdrops import LinkDrop
from passnat.io.neighbours import ArpTimers
from passnat.io.offload import (
    ADDR_WORDS,
    GSO_NONE,
    PARTIAL_TX,
    VNET,
    VNET_F_NEEDS_CSUM,
    VNET_HDR_LEN,
    complete_checksum,
    complete_partial,
    parse_vnet,
    segment,
    to_partial,
)
from passnat.io.reactor import POLLIN, Reactor
from passnat.nat.actions import Output
from passnat.nat.router import Router
from passnat.packet import icmp
from passnat.service.hooks import Service
from passnat.speedups import module as speedups_module

log = logging.getLogger("passnat.daemon")

_speedups = speedups_module()  # the optional C receive loop (passnat/_speedups.c ring_rx)
_ring_rx = _speedups.ring_rx if _speedups is not None else None

_FRAME = struct.Struct("=IIIHH")  # tpacket2_hdr: status, len, snaplen, mac, net
_CHUNK = 64  # frames of one link before the next link's turn (_speedups.c CHUNK)
_STAMP = struct.Struct("=II")  # tpacket2_hdr tp_sec, tp_nsec (at offset 16)
_U32 = struct.Struct("=I")
_H = struct.Struct("!H")
_ICMP_RATE = 100.0  # host-unreachable messages per second (token bucket)
_INF = float("inf")


@dataclass(slots=True)
class DaemonOptions:
    config_path: str
    attachments: list[Attachment]
    control_path: str
    state_file: str | None = None
    geometry: RingGeometry = field(default_factory=RingGeometry)
    arp_timers: ArpTimers = field(default_factory=ArpTimers)
    budget: int = 512  # frames per loop turn, all links (they take turns, 64 frames each: an ARP reply is read soon)
    spin_us: int = 50  # after traffic, the C loop keeps looking for frames this long before it sleeps
    shed: bool = True  # the load-shedding XDP program on every interface (passnat/io/shed.py)
    host_undo: HostUndo | None = None
    capture: str | None = None  # pcapng of everything the router sends (passnat/io/capture.py)
    http: str | None = None  # ADDRESS:PORT of the status page and /metrics (passnat/io/http.py)
    state_interval: float = statefile.SAVE_INTERVAL  # periodic --state-file saves (0: SIGHUP and stop only)


class Daemon:
    def __init__(self, config: Config, options: DaemonOptions):
        self.options = options
        self.config = config
        self.clock = time.monotonic
        self.router = Router(config)
        self.capture: Capture | None = None
        self.reactor = Reactor()
        self.links: dict[str, Link] = {a.name: Link(a.name, a.linux, geometry=options.geometry,
                                                    arp_timers=options.arp_timers, shed=options.shed)
                                       for a in options.attachments}
        self._out: dict[str, tuple[Link, dict[str, bytes], Callable[[bytes], int]]] = {}
        #: ring_rx's view of the same: interface -> (ARP fast map, send socket fd, link state)
        self._egress: dict[str, tuple[dict[str, bytes], int, Any]] = {}
        self.ring_rx: Callable[..., int] | None = _ring_rx
        self._rx_links: tuple[Any, ...] = ()
        self._rx_all: tuple[Link, ...] = ()
        self._ring_fds: tuple[int, ...] = ()
        #: time.monotonic() by which the loop's next turn is due (timers, housekeeping): the C
        #: receive loop may sleep on the descriptors itself until then (0: it may not)
        self._until = 0.0
        self.counters: Counter[str] = Counter()
        self.partial_max = self._partial_max(config)
        self.control: ControlServer | None = None
        self.stopping = False
        self.reload_requested = False
        self.started = time.monotonic()
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._old_handlers: dict[int, Any] = {}
        self._icmp_tokens = _ICMP_RATE
        self._icmp_last = 0.0
        self._error_logged = 0.0
        self.service = Service(self, options.http)  # systemd, HTTP, history (passnat/service)
        self.saver = statefile.Saver(options.state_file, options.state_interval) if options.state_file else None
        #: False on an HA backup: the receive loop drops every IPv4 frame and ARP answers stop
        self.forwarding = True
        from passnat.ha.node import attach

        self.ha = attach(self)  # ``ha sync`` configured: the active/standby role and sync (passnat/ha)

    # ================================================================ lifecycle

    def start(self) -> None:
        """Open links, restore sessions, open the control socket; raises on failure
        (everything opened so far is closed again)."""
        try:
            for link in self.links.values():
                link.open()
                assert link.ring is not None and link.neigh is not None and link.tx is not None
                self.reactor.watch(link.ring.fileno(), POLLIN, functools.partial(_polled, link))
                self.bind_output(link)
            self._update_addresses()
            if self.options.state_file:
                statefile.load(self.options.state_file, self.router, self.clock)
            if self.options.capture:
                self.capture = Capture(self.options.capture, [i.name for i in self.config.interfaces])
                log.info("capturing every packet sent to %s", self.options.capture)
            self._install_signals()
            self.control = ControlServer(self.options.control_path, self.reactor, self.dispatch)
            self.service.start()
            if self.ha is not None:
                self.ha.start()
        except BaseException:
            self.close()
            raise
        for link in self.links.values():
            if link.neigh is None:
                continue
            for frame in link.neigh.announcements():
                if link.send(frame):
                    self.counters["gratuitous_arp_sent"] += 1
        # what exists now lives as long as the daemon (the engine's tables and index dicts among
        # it): out of the cycle collector's way (sessions and the expiry wheel are untracked,
        # passnat/nat/table.py), so a full collection stays short however many sessions there are
        gc.collect()
        gc.freeze()
        log.info("passnat running: %s; control socket %s",
                 ", ".join(f"{lk.name}={lk.linux}" for lk in self.links.values()), self.options.control_path)
        self.service.ready()

    def close(self) -> None:
        """Release everything (idempotent): control socket, links (offloads restored),
        signal handlers, the host setup made by --prepare.  A step that fails is logged
        and the others still run."""
        for what, step in (("service", self.service.close), ("control socket", self._close_control),
                           ("capture", self._close_capture), ("interfaces", self._close_links),
                           ("signal handlers", self._remove_signals),
                           ("host setup", self._undo_host), ("state file saver", self._close_saver),
                           ("ha sync", self._close_ha)):
            try:
                step()
            except Exception:  # noqa: BLE001 -- whatever failed, the rest is still released
                log.exception("stop: releasing the %s failed; releasing the rest", what)

    def _close_ha(self) -> None:
        if self.ha is not None:
            self.ha.close()

    def _close_control(self) -> None:
        control, self.control = self.control, None
        if control is not None:
            control.close()

    def _close_capture(self) -> None:
        capture, self.capture = self.capture, None
        if capture is not None:
            capture.close()
            log.info("capture %s: %d packet(s)", capture.path, capture.packets)

    def _close_links(self) -> None:
        self._out.clear()
        self._egress.clear()
        for link in self.links.values():
            try:
                link.close()
            except Exception:  # noqa: BLE001
                log.exception("stop: closing %s (%s) failed", link.name, link.linux)

    def _undo_host(self) -> None:
        undo, self.options.host_undo = self.options.host_undo, None
        if undo is not None:
            undo.undo()

    def _save_final(self) -> None:
        if self.saver is not None:
            self.saver.final(self.router, self.clock)

    def _close_saver(self) -> None:
        if self.saver is not None:
            self.saver.close()

    def bind_output(self, link: Link) -> None:
        """Register ``link``'s ring, send socket and ARP cache (after ``link.open``)."""
        assert link.neigh is not None and link.tx is not None
        self._out[link.name] = (link, link.neigh.fast, link.tx.send)
        self._egress[link.name] = (link.neigh.fast, link.tx.fileno(), link.fast_state)
        self._bind_rx()

    def stop(self) -> None:
        """Clean stop: save sessions (``--state-file``), then ``close`` -- always, whatever failed."""
        try:
            for what, step in (("service", self.service.stopping), ("sessions", self._save_final)):
                try:
                    step()
                except Exception:  # noqa: BLE001 -- the host setup and the socket are released regardless
                    log.exception("stop: %s failed", what)
        finally:
            self.close()
        log.info("passnat stopped")

    def _install_signals(self) -> None:
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.reactor.watch(self._wake_r.fileno(), POLLIN, self._on_wake)
        signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)
        for sig, handler in ((signal.SIGTERM, self._on_stop_signal), (signal.SIGINT, self._on_stop_signal),
                             (signal.SIGHUP, self._on_hup)):
            self._old_handlers[sig] = signal.signal(sig, handler)

    def _remove_signals(self) -> None:
        for sig, old in self._old_handlers.items():
            signal.signal(sig, old)
        self._old_handlers.clear()
        if self._wake_r is not None:
            signal.set_wakeup_fd(-1)
            self.reactor.unwatch(self._wake_r.fileno())
            self._wake_r.close()
            assert self._wake_w is not None
            self._wake_w.close()
            self._wake_r = self._wake_w = None

    def _on_stop_signal(self, signum: int, _frame: Any) -> None:
        if not self.stopping:
            log.info("%s received: stopping", signal.Signals(signum).name)
        self.stopping = True

    def _on_hup(self, _signum: int, _frame: Any) -> None:
        self.reload_requested = True

    def _on_wake(self, _revents: int) -> None:
        assert self._wake_r is not None
        try:
            while self._wake_r.recv(256):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    # ================================================================ loop

    def run(self) -> None:
        """Forward until SIGTERM/SIGINT (``stopping``)."""
        reactor = self.reactor
        next_housekeeping = 0.0
        timeout: float | None = 0.0
        while not self.stopping:
            events = reactor.poll(timeout)
            for fd, _revents in events:
                if fd not in self._ring_fds:  # the control socket, HA, a signal: what it starts gets
                    self._until = 0.0         # this loop's turn before the C walk may sleep again
                    break
            reactor.dispatch(events)
            more = self._drain_all()
            for link in self._rx_all:
                link.shed_turn(more)
            now = self.clock()
            deadline = self._timers(now)
            if self.ha is not None:
                deadline = self.ha.tick(now, deadline)
            if self.reload_requested:
                self.reload_requested = False
                self.service.reloading()
                self.service.reloaded(self.reload())
                if self.saver is not None:
                    self.saver.request()  # SIGHUP also saves the sessions
            mono = time.monotonic()
            if mono >= next_housekeeping:
                next_housekeeping = mono + 1.0
                for link in self.links.values():
                    link.fold_fast_state()  # the C loop's counts; send errors logged within a second
                if self.control is not None:
                    self.control.expire(mono)
                self.service.housekeeping(mono)
                if self.saver is not None:
                    self.saver.tick(self.router, self.clock)  # periodic --state-file save (forked)
            if more:
                timeout = 0.0
                self._until = 0.0
            else:
                if self.capture is not None:
                    self.capture.flush()
                timeout = min(1.0, next_housekeeping - mono)
                if any(link.shed is not None and link.shed.attached for link in self._rx_all):
                    timeout = min(timeout, SHED_TURN)  # the shedding program comes off on time when idle
                until = mono + timeout
                if deadline is not None:
                    timeout = max(0.0, min(timeout, deadline - self.clock()))
                    until = min(until, deadline)
                self._until = until

    def _timers(self, now: float) -> float | None:
        """Run due engine and ARP timers; the next deadline (engine clock) or None."""
        router = self.router
        if router.deadline <= now:  # a cached minimum (Router.wake), not a scan of every module
            try:
                outs = router.on_timer(now)
                if outs:
                    self._send(outs, None, None, now)
            except Exception:  # noqa: BLE001 -- a bug must not stop the router; counted and logged
                self._internal_error("engine timer")
        rd = router.deadline
        dl = None if rd == float("inf") else rd
        for link in self.links.values():
            neigh = link.neigh
            if neigh is None:
                continue
            nd = neigh.next_deadline()
            if nd is not None and nd <= now:
                for frame in neigh.on_timer(now):
                    link.send(frame)
                if neigh.failed:
                    self._unreachable(link, now)
                nd = neigh.next_deadline()
            if nd is not None and (dl is None or nd < dl):
                dl = nd
        return dl

    # ================================================================ receive

    def _drain_all(self) -> bool:
        """Walk every link's ring, the links taking turns (64 frames each), up to the budget; True
        when frames may still be waiting (the budget ran out).

        The C loop may also sleep on every watched descriptor until the loop's next turn is due
        (``_until``), after a walk of established flows only: a frame that then arrives is walked
        at once, without a turn of this loop first (the wake-up through Python costs ~0.08 ms per
        packet on the bench VM, docs/daemon.md).  Not while a stop or reload is pending, nor
        with a clock other than time.monotonic (the one the C loop reads after its sleep)."""
        sleep = None
        if (self.ring_rx is not None and self._until > 0.0 and self.clock is time.monotonic
                and not self.stopping and not self.reload_requested):
            until, rd = self._until, self.router.deadline  # (the engine's clock is time.monotonic here)
            if not rd >= until:  # an engine timer set since the turn was planned (or not a number)
                until = rd
            if 0.0 < until < _INF:  # not when the engine's timers are due at once (-inf after a reload)
                sleep = (int(until * 1e9), self.reactor.pollfds(), self._ring_fds)
        return self._walk(self._rx_links, self._rx_all, self.options.spin_us * 1000, sleep)

    def _drain(self, link: Link) -> bool:
        """Walk ``link``'s ring alone (tests; the loop walks all links with ``_drain_all``)."""
        entry = next((e for e in self._rx_links if e[0] == link.name), None)
        if entry is None:
            return False
        return self._walk((entry,), (link,), 0)

    def _walk(self, entries: tuple[Any, ...], links: tuple[Link, ...], spin_ns: int, sleep: Any = None) -> bool:
        router = self.router
        budget = self.options.budget
        now = self.clock()
        before = [lk.fast_state[ST_RX_PACKETS] for lk in links]
        if self.ring_rx is not None:
            # the C loop: established flows forwarded in C, every other frame through _frame
            fast = self.forwarding and self.capture is None and now < router.deadline
            lean = router.lean.c_state if fast and router.lean is not None else None
            done = self.ring_rx(entries, budget, now, fast, router.fast_tables, self._egress,
                                self.partial_max, spin_ns, lean, self._send, self._lean_error, Output, sleep)
        else:
            done = self._walk_python(links, budget, now)
        resynced = False
        for lk, b in zip(links, before):
            if lk.polled:
                lk.polled = False
                if lk.fast_state[ST_RX_PACKETS] == b and self._resync(lk):
                    resynced = True
        if resynced:  # frames were waiting elsewhere in the ring: take them now
            return self._walk(entries, links, spin_ns)  # (no sleep: the loop's turn comes first)
        if done < budget:
            return False
        for lk in links:  # the budget ran out: is a frame still waiting?
            ring = lk.ring
            if ring is not None and ring.mm[lk.fast_state[ST_HEAD] * ring.frame_size] & 1:
                return True
        return False

    def _lean_error(self, interface: str, exc: BaseException | None) -> None:
        """An exception the C loop's lean path raised (as Router.handle raising in ``_frame``):
        counted as an internal error and logged with its traceback; the frame was dropped."""
        self.counters[LinkDrop.INTERNAL_ERROR.value] += 1
        mono = time.monotonic()
        if mono - self._error_logged >= 10.0:
            self._error_logged = mono
            log.error("internal error while processing a frame on %s (dropped; counted as %s; further errors "
                      "are logged at most every 10 s)", interface, LinkDrop.INTERNAL_ERROR.value,
                      exc_info=(type(exc), exc, exc.__traceback__) if exc is not None else None)

    def _walk_python(self, links: tuple[Link, ...], budget: int, now: float) -> int:
        """``_speedups.ring_rx`` in Python (PASSNAT_PURE=1, or no compiler when passnat was
        installed): the same turns, every frame through ``_frame``."""
        total = 0
        frame = self._frame
        while total < budget:
            walked = 0
            for link in links:
                ring = link.ring
                if ring is None:
                    continue
                st = link.fast_state
                mm, size, nr, head = ring.mm, ring.frame_size, ring.frame_nr, st[ST_HEAD]
                n = 0
                while n < _CHUNK and total < budget:
                    off = head * size
                    if not mm[off] & 1:  # TP_STATUS_USER (little-endian low byte)
                        break
                    st[ST_RX_PACKETS] += 1
                    st[ST_RX_BYTES] += _U32.unpack_from(mm, off + 4)[0]
                    frame(link, off, now)
                    _U32.pack_into(mm, off, 0)  # TP_STATUS_KERNEL: the slot goes back
                    head = (head + 1) % nr
                    n += 1
                    total += 1
                st[ST_HEAD] = head
                walked += n
            if not walked:
                break
        return total

    def _bind_rx(self) -> None:
        """The links as ``ring_rx`` takes them (after open and after a reload)."""
        entries, links = [], []
        for link in self.links.values():
            ring = link.ring
            if ring is None:
                continue
            if link.slow_cb is None:
                link.slow_cb = functools.partial(self._frame, link)
            entries.append((link.name, ring.mm, ring.frame_nr, ring.frame_size, link.mtu + 14, link.fast_state,
                            link.slow_cb))
            links.append(link)
        self._rx_links = tuple(entries)
        self._rx_all = tuple(links)
        self._ring_fds = tuple(lk.ring.fileno() for lk in links if lk.ring is not None)

    def _frame(self, link: Link, off: int, now: float) -> None:
        """One frame of ``link``'s ring (slot at ``off``), in Python: IPv4 through the engine and
        out (``_send``), ARP to the neighbour table; VLAN-tagged frames dropped, super-frames
        segmented, partial checksums finished by the kernel on send.  Never raises: an error is
        counted (``internal_error``) and logged."""
        ring = link.ring
        assert ring is not None
        mm = ring.mm
        try:
            status, length, snap, mac, net = _FRAME.unpack_from(mm, off)
            if status & TP_STATUS_COPY:
                self._rx_copy(link, now)
                return
            etype = mm[off + mac + 12] << 8 | mm[off + mac + 13]
            if status & TP_STATUS_VLAN_VALID or etype == 0x8100 or etype == 0x88A8:
                link.counters[LinkDrop.VLAN_TAGGED.value] += 1
                return
            if etype != 0x0800:  # (the ring's filter passes IPv4, ARP and VLAN tags only)
                self._rx_arp(link, mm[off + net:off + mac + snap], now)
                return
            if not self.forwarding:  # an HA backup: read and dropped
                link.counters["ha_backup_dropped"] += 1
                return
            p = off + net
            total = mm[p + 2] << 8 | mm[p + 3]
            end = off + mac + snap
            pkt = mm[p:p + total] if total >= 20 and p + total <= end else mm[p:end]
            if status & TP_STATUS_CSUMNOTREADY or length > link.mtu + 14:
                # peer checksum offload: the L4 checksum field holds the pseudo-header sum; the
                # checksum is the inverted sum from csum_start to the end
                flags, gso, _hl, _gs, cstart, coff = VNET.unpack_from(mm, off + mac - VNET_HDR_LEN)
                a = cstart - (net - mac)
                if gso or length > snap or not flags & VNET_F_NEEDS_CSUM or not 20 <= a < len(pkt) - coff - 1:
                    self._rx_special(link, pkt, snap, length, status, mm[off + mac - VNET_HDR_LEN:off + mac], now)
                    return
                link.csum_partial += 1
                n = len(pkt)
                partial_max = self.partial_max
                if n <= partial_max - 4 or (n <= partial_max and not (pkt[9] == 6 and pkt[a + 13] & 2)):
                    # the engine cannot fragment it: the kernel finishes the checksum
                    outs = self.router.handle(link.name, pkt, now)
                    if outs:
                        self._send(outs, link.name, pkt, now, True)
                    return
                pkt = complete_partial(pkt, a, coff)
            outs = self.router.handle(link.name, pkt, now)
            if outs:
                self._send(outs, link.name, pkt, now)
        except Exception:  # noqa: BLE001 -- bad input never stops the router; counted and logged
            self._internal_error(f"frame on {link.name}")

    def _rx_copy(self, link: Link, now: float) -> None:
        """A frame larger than a ring slot (TP_STATUS_COPY): whole from the socket's queue."""
        assert link.ring is not None
        data = link.ring.recv_copy()
        if data is None or len(data) < VNET_HDR_LEN + 14:
            link.counters[LinkDrop.RX_TRUNCATED.value] += 1
            return
        if not self.forwarding:  # an HA backup: read and dropped
            link.counters["ha_backup_dropped"] += 1
            return
        vnet, frame = data[:VNET_HDR_LEN], data[VNET_HDR_LEN:]
        etype = frame[12] << 8 | frame[13]
        if etype != 0x0800:
            link.counters[LinkDrop.VLAN_TAGGED.value if etype in (0x8100, 0x88A8) else "arp_ignored"] += 1
            return
        pkt = frame[14:]
        status = TP_STATUS_CSUMNOTREADY if vnet[0] & VNET_F_NEEDS_CSUM else 0
        self._rx_special(link, pkt, len(frame), len(frame), status, vnet, now)

    def _resync(self, link: Link) -> bool:
        """``poll`` said the ring is readable but the slot at our head is not ours: find the oldest
        slot handed over (by its kernel timestamp) and go on from there (True); drain stray
        copies (False)."""
        ring = link.ring
        assert ring is not None
        mm, size = ring.mm, ring.frame_size
        ready = [(_STAMP.unpack_from(mm, i * size + 16), i) for i in range(ring.frame_nr) if mm[i * size] & 1]
        if ready:
            link.fast_state[ST_HEAD] = min(ready)[1]
            self.counters["ring_resync"] += 1
            if not link.resync_logged:
                link.resync_logged = True
                log.warning("%s: the receive ring was out of step (%d frame(s) waiting elsewhere); resumed at "
                            "the oldest (counted as ring_resync)", link.name, len(ready))
            return True
        while ring.recv_copy() is not None:
            link.counters["rx_copy_orphan"] += 1
        return False

    def _rx_special(self, link: Link, pkt: bytes, snap: int, length: int, status: int, vnet_hdr: bytes,
                    now: float) -> None:
        """Frames a virtual link made that the inline path does not handle: super-frames,
        truncated frames, partial checksums without offsets."""
        if length > snap:
            link.counters[LinkDrop.RX_TRUNCATED.value] += 1
            return
        vnet = parse_vnet(vnet_hdr, 0)
        if vnet.gso_type != GSO_NONE:
            segs = segment(pkt, vnet.gso_type, vnet.gso_size, partial=True)
            if segs is None:
                link.counters[LinkDrop.SUPERFRAME.value] += 1
                if not link.superframe_logged:
                    link.superframe_logged = True
                    log.warning("%s: dropping super-frames (gso type %d, %d bytes) from a peer with TSO/GSO: "
                                "a physical wire never carries them; switch segmentation offload off on the "
                                "peer (`ethtool -K <peer-interface> tso off gso off`). Counted as %s.",
                                link.name, vnet.gso_type, length, LinkDrop.SUPERFRAME.value)
                return
            if not link.superframe_logged:
                link.superframe_logged = True
                log.info("%s: segmenting super-frames from a peer with TSO/GSO (%d bytes cut into %d); "
                         "this costs CPU: switch segmentation offload off on the peer "
                         "(`ethtool -K <peer-interface> tso off gso off`)", link.name, length, len(segs))
            link.counters["rx_superframes_segmented"] += 1
            link.counters["rx_segments_made"] += len(segs)
            for seg in segs:
                self._rx_partial(link, seg, now)
            return
        if status & TP_STATUS_CSUMNOTREADY:
            fixed = complete_checksum(pkt)
            if fixed is None:
                link.counters[LinkDrop.RX_MALFORMED.value] += 1
                return
            link.csum_partial += 1
            pkt = fixed
        outs = self.router.handle(link.name, pkt, now)
        if outs:
            self._send(outs, link.name, pkt, now)

    def _rx_partial(self, link: Link, pkt: bytes, now: float) -> None:
        """A packet whose L4 field holds its pseudo-header sum: through the engine, and out
        with a checksum request (or finished here when the engine might fragment it)."""
        n = len(pkt)
        if n > self.partial_max or (n > self.partial_max - 4 and _is_syn(pkt)):
            fixed = complete_checksum(pkt)
            if fixed is not None:
                outs = self.router.handle(link.name, fixed, now)
                if outs:
                    self._send(outs, link.name, fixed, now)
            return
        outs = self.router.handle(link.name, pkt, now)
        if outs:
            self._send(outs, link.name, pkt, now, True)

    def _rx_arp(self, link: Link, payload: bytes, now: float) -> None:
        arp = parse_arp(payload)
        if arp is None or link.neigh is None:
            link.counters["arp_ignored"] += 1
            return
        for frame in link.neigh.on_arp(arp, now):
            link.send(frame)

    # ================================================================ send

    def _send(self, outs: list[Output], in_iface: str | None, in_pkt: bytes | None, now: float,
              partial: bool = False) -> None:
        """Transmit the engine's outputs; unresolved next hops go through ARP.

        ``partial``: the input packet carried a partial checksum (peer checksum
        offload), so the engine's incremental update left the L4 field meaningless:
        TCP/UDP outputs go out with the field set to their pseudo-header sum and a
        checksum request for the kernel (offload.to_partial)."""
        if self.capture is not None:
            self.capture.write(outs)
        table = self._out
        partial_tx = PARTIAL_TX.get
        addr_words = ADDR_WORDS.unpack_from
        pack_h = _H.pack
        for o in outs:
            entry = table.get(o.interface)
            if entry is None:
                self.counters["output_unknown_interface"] += 1
                continue
            link, fast, txsend = entry
            hdr = fast.get(str(o.next_hop))  # exact str: no Python-level __eq__ in the lookup
            packet = o.packet
            if hdr is not None:
                # offload.to_partial, inline (the hot path of traffic from offloading peers)
                if (partial and not (packet[6] & 0x3F or packet[7])
                        and (tx := partial_tx(packet[0] << 8 | packet[9])) is not None and tx[1] + 2 <= len(packet)):
                    ihl, co, vnet = tx
                    c = sum(addr_words(packet, 12)) + packet[9] + len(packet) - ihl
                    c = (c & 0xFFFF) + (c >> 16)
                    c = (c & 0xFFFF) + (c >> 16)
                    frame = b"".join((vnet, hdr[VNET_HDR_LEN:], packet[:co], pack_h(c), packet[co + 2:]))
                else:
                    frame = hdr + packet
                try:
                    txsend(frame)
                except OSError as e:
                    link.tx_failed(e.errno or 0)
                    continue
                link.tx_packets += 1
                link.tx_bytes += len(frame) - VNET_HDR_LEN
                continue
            if partial and (tp := to_partial(packet)) is not None:
                packet = complete_checksum(tp[1]) or packet  # it waits for ARP: finish it here
            neigh = link.neigh
            assert neigh is not None
            origin = (in_iface, in_pkt) if in_pkt is not None else None
            for frame in neigh.output(o.next_hop, packet, origin, now):
                link.send(frame)
            if neigh.failed:
                self._unreachable(link, now)

    def _unreachable(self, link: Link, now: float) -> None:
        """ICMP host unreachable (RFC 1812 §4.3.3.1) to the senders of packets whose next
        hop on ``link`` did not answer ARP, quoting each packet as it was received."""
        assert link.neigh is not None
        failed, link.neigh.failed = link.neigh.failed, []
        for _packet, origin in failed:
            if origin is None:
                continue
            in_iface, orig = origin
            if not icmp.error_allowed(orig) or not self._icmp_token(now):
                continue
            itf = self.router.config.interface(in_iface)
            if itf is None or not itf.addresses:
                continue
            src = int(itf.addresses[0].ip)
            sender = int.from_bytes(orig[12:16], "big")
            hop = self.router.hop(sender)
            if hop is None:
                continue
            err = icmp.build_error(src=src, orig=orig, icmp_type=icmp.DEST_UNREACH, code=icmp.HOST_UNREACH)
            self.counters["icmp_host_unreachable_sent"] += 1
            self._send([Output(hop[0], hop[1], err)], None, None, now)

    def _icmp_token(self, now: float) -> bool:
        elapsed = now - self._icmp_last
        self._icmp_last = now
        if elapsed > 0:
            self._icmp_tokens = min(_ICMP_RATE, self._icmp_tokens + elapsed * _ICMP_RATE)
        if self._icmp_tokens < 1:
            return False
        self._icmp_tokens -= 1
        return True

    def _internal_error(self, what: str) -> None:
        self.counters[LinkDrop.INTERNAL_ERROR.value] += 1
        mono = time.monotonic()
        if mono - self._error_logged >= 10.0:
            self._error_logged = mono
            log.exception("internal error while processing a %s (dropped; counted as %s; further errors "
                          "are logged at most every 10 s)", what, LinkDrop.INTERNAL_ERROR.value)

    # ================================================================ configuration

    @staticmethod
    def _partial_max(config: Config) -> int:
        """The largest packet the engine never fragments (the smallest MTU; a SYN must stay 4
        bytes below it, room for an MSS option the engine may add): up to this size a partial
        checksum is left to the kernel."""
        return min((i.effective_mtu for i in config.interfaces), default=576)

    def _update_addresses(self) -> None:
        owned = self.router.owned_addresses() if self.forwarding else {}  # an HA backup answers no ARP
        for link in self.links.values():
            itf = self.router.config.interface(link.name)
            addrs: list[ipaddress.IPv4Interface] = list(itf.addresses) if itf is not None else []
            if link.neigh is not None:
                link.neigh.set_addresses(addrs, owned.get(link.name, set()))

    def reload(self) -> bool:
        """SIGHUP: re-read the configuration; apply it keeping sessions, or keep the old one."""
        path = self.options.config_path
        log.info("SIGHUP: reloading %s", path)
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
            new = parse_config(text, path)
        except ConfigError as e:  # one line: every error, then what happens
            log.error("configuration NOT reloaded: %d error(s) in %s: %s; the previous configuration keeps running",
                      len(e.errors), path, "; ".join(str(p) for p in e.errors))
            return False
        except (OSError, UnicodeDecodeError) as e:
            log.error("configuration NOT reloaded: cannot read %s (%s); the previous configuration keeps running",
                      path, e)
            return False
        names = {i.name for i in new.interfaces}
        if names != set(self.links):
            log.error("configuration NOT reloaded: its interfaces (%s) differ from the running ones (%s); "
                      "restart passnat to change interfaces", ", ".join(sorted(names)),
                      ", ".join(sorted(self.links)))
            return False
        for itf in new.interfaces:
            link = self.links[itf.name]
            if link.mtu < itf.effective_mtu:
                log.error("configuration NOT reloaded: interface %s mtu %d exceeds the MTU of %s (%d)",
                          itf.name, itf.effective_mtu, link.linux, link.mtu)
                return False
        for w in new.warnings:
            log.warning("%s", w)
        before = {n: set(a) for n, a in self.router.owned_addresses().items()}
        self.router.reconfigure(new)
        self.config = new
        if self.ha is not None:
            self.ha.reconfigure(new)
        self.partial_max = self._partial_max(new)
        self._update_addresses()
        after = self.router.owned_addresses()
        for link in self.links.values():
            if link.neigh is None:
                continue
            added = set(after.get(link.name, set())) - before.get(link.name, set())
            for frame in link.neigh.announcements(added):
                if link.send(frame):
                    self.counters["gratuitous_arp_sent"] += 1
        log.info("configuration reloaded from %s: %d session(s) kept", path, len(self.router.table))
        return True

    # ================================================================ control

    def dispatch(self, req: dict[str, Any]) -> Any:
        op = req["op"]
        now = self.clock()
        if op == "ping":
            return {"pid": _getpid(), "uptime": time.monotonic() - self.started}
        if op == "status_nat":
            return views.status_nat(self.router, now)
        if op == "status_filter":
            return views.status_filter(self.router, now)
        if op == "counters":
            return views.counters(self.router, self.links.values(), self.counters,
                                  uptime=time.monotonic() - self.started)
        if op == "config":
            return views.config_text(self.router)
        if op == "doctor":
            return views.doctor(self.router, now)
        if op == "metrics":
            return views.metrics(self.router, self.links.values(), self.counters)
        if op == "arp":
            recs: list[dict[str, Any]] = []
            for link in self.links.values():
                if link.neigh is not None:
                    recs.extend(link.neigh.records(now))
            return views.arp(recs)
        if op.startswith("ha_"):
            if self.ha is None:
                raise ProtocolError("this passnat has no `ha sync` configuration (docs/ha.md)")
            return self.ha.control(req)
        if op == "clear_nat":
            result = views.clear_nat(self.router, req.get("id"))
            log.info("clear nat session %s: %d session(s) removed",
                     "all" if req.get("id") is None else req["id"], result["cleared"])
            return result
        raise ProtocolError(f"unknown operation {op}")


def _is_syn(pkt: bytes) -> bool:
    """A TCP segment with SYN set (the engine may add an MSS option to it)."""
    return pkt[9] == 6 and len(pkt) > (ihl := (pkt[0] & 15) << 2) + 13 and bool(pkt[ihl + 13] & 2)


def _polled(link: Link, _revents: int) -> None:
    link.polled = True  # poll() said the ring is readable (_drain checks the ring agrees)


def _getpid() -> int:
    import os

    return os.getpid()
