"""Fragment translation and requeueing (R21, R22).

Only the first fragment (offset 0) carries the transport header, so it alone
can choose a session and a filter verdict.  ``first()`` records, per
datagram (source, destination, protocol, IP id, as received), what the router
did with it: the address NAT rewrote, the egress, and the filter counters
that decided it.  Later fragments of that datagram get the same treatment in
``later()`` -- same translation, same egress, counted on the same filter
rules -- in both directions, whatever the protocol (TCP, UDP, ICMP, ESP,
GRE, ...).  A first fragment the filter blocked is recorded too
(``blocked()``): its later fragments are dropped under the same rule.  A
first fragment dropped for any other reason (no session, no route, a limit,
...) is remembered by its fragment id for ``fragment-requeueing-timeout``
seconds (``first_dropped()``, at most ``DROPPED_MAX`` datagrams): its later
fragments, held or still to come, are dropped at once
(``fragment_no_session``) instead of waiting out the hold.

A later fragment that arrives before its first fragment, where the first
fragment matters (NAT is involved -- it arrived on a NAT interface or leaves
through one -- or a filter is configured):
  * ``option ip fragment-requeueing on`` (passnat's default, RFC 4787 REQ-14):
    held until the first fragment arrives, then sent right after it; at most
    ``fragment-requeueing-limit`` (256) fragments are held in total -- the
    257th is dropped (``fragment_hold_full``) -- and each is dropped
    ``fragment-requeueing-timeout`` (5 s) after it arrived
    (``fragment_hold_expired``);
  * off (SEIL's default): dropped (``fragment_out_of_order``).
Fragments that need nothing from their first fragment are routed as they come.

A fragment overlapping another fragment of its datagram (same bytes, other
bounds) is dropped (``fragment_overlap``): overlaps only serve to smuggle
different transport headers past NAT and filter (RFC 1858).  An exact
duplicate is forwarded like the original.

Memory is bounded whatever arrives: held fragments by the limit, records by
``RECORD_MAX`` (least recently used evicted) and ``RECORD_LIFETIME`` seconds
after the datagram's last fragment, the byte ranges remembered per datagram
by ``PIECES_MAX``.  Expiry also runs lazily on every fragment, so the limit
holds even when the caller's timer is late.  Unfragmented traffic never
touches this module.
"""
from __future__ import annotations

import struct
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from passnat.nat.actions import Output
from passnat.nat.drops import Drop
from passnat.nat.handlers.base import Pkt

if TYPE_CHECKING:
    from passnat.nat.router import Router

RECORD_LIFETIME = 30.0
RECORD_MAX = 8192
#: datagrams whose first fragment was dropped, remembered at once (least recently dropped evicted)
DROPPED_MAX = 1024
#: byte ranges remembered per datagram for overlap detection (more are not checked)
PIECES_MAX = 64

FragKey = tuple[int, int, int, int]  # (src, dst, proto, ident) as received
Piece = tuple[int, int]  # [start, end) payload bytes


def frag_key(buf: bytes | bytearray) -> FragKey:
    ident = (buf[4] << 8) | buf[5]
    src, dst = struct.unpack_from("!II", buf, 12)
    return (src, dst, buf[9], ident)


def piece_of(buf: bytes | bytearray) -> Piece:
    """The payload byte range [start, end) a fragment carries."""
    ihl = (buf[0] & 0x0F) * 4
    total = (buf[2] << 8) | buf[3]
    start = (((buf[6] << 8) | buf[7]) & 0x1FFF) * 8
    return start, start + max(0, total - ihl)


def conflict(pieces: list[Piece], p: Piece) -> str | None:
    """"duplicate" when ``p`` equals a known piece, "overlap" when it overlaps one, else None."""
    start, end = p
    for s, e in pieces:
        if s == start and e == end:
            return "duplicate"
        if start < e and s < end:
            return "overlap"
    return None


@dataclass(slots=True)
class Record:
    """What the router did with a datagram's first fragment."""

    new_addr: int | None  # the address NAT wrote, or None
    outbound: bool  # True: the source was rewritten; False: the destination
    oif: str
    nh: str
    last: float
    fc: Any = None  # filter counter object of the first fragment's decisions (or None)
    blocked: bool = False  # the filter blocked the first fragment
    pieces: list[Piece] = field(default_factory=list)
    new_dst: int | None = None  # a reflected datagram (R26): its new destination besides new_addr


@dataclass(slots=True, eq=False)
class HeldFragment:
    key: FragKey
    iface: str
    data: bytes
    since: float
    piece: Piece
    alive: bool = True


class FragmentTracker:
    def __init__(self, router: Router):
        self.router = router
        self.records: OrderedDict[FragKey, Record] = OrderedDict()
        self.held: dict[FragKey, list[HeldFragment]] = {}
        self.queue: deque[HeldFragment] = deque()  # held fragments in arrival order (some released)
        self.n_held = 0
        self.dropped: OrderedDict[FragKey, float] = OrderedDict()  # first fragment dropped -> forget at
        self.configure()

    def configure(self) -> None:
        opts = self.router.config.options
        self.requeue = opts.fragment_requeueing
        self.limit = opts.fragment_requeueing_limit
        self.hold_time = float(opts.fragment_requeueing_timeout)

    # ------------------------------------------------------------ first

    def first(self, pkt: Pkt, oif: str, nh: str, new_addr: int | None, outbound: bool, *,
              new_dst: int | None = None) -> list[Output]:
        """Record the first fragment's treatment; returns held later fragments, processed."""
        now = pkt.now
        self._expire(now)
        key = frag_key(pkt.orig)
        filt = getattr(self.router, "filter", None)
        fc = filt.fragment_counter(pkt) if filt is not None else None
        self.dropped.pop(key, None)
        self._record(key, Record(new_addr, outbound, oif, nh, now, fc, pieces=[piece_of(pkt.orig)],
                                 new_dst=new_dst))
        held = self._release(key)
        if not held:
            return []
        self.router.count("fragments_requeued", len(held))
        out: list[Output] = []
        for h in held:
            out.extend(self.router.reinject(h.iface, h.data, now))
        return out

    def blocked(self, pkt: Pkt, counter: Any) -> None:
        """The filter blocked first fragment ``pkt``: its later fragments are blocked too."""
        now = pkt.now
        self._expire(now)
        key = frag_key(pkt.orig)
        self._record(key, Record(None, False, "", "", now, counter, blocked=True))
        for _ in self._release(key):
            self._block(counter)

    def first_dropped(self, pkt: Pkt) -> None:
        """First fragment ``pkt`` was dropped: its later fragments are dropped at once."""
        now = pkt.now
        self._expire(now)
        key = frag_key(pkt.orig)
        if key in self.records:
            return  # blocked by the filter (counted on its rule), or an earlier copy went through
        self.dropped[key] = now + self.hold_time
        self.dropped.move_to_end(key)
        while len(self.dropped) > DROPPED_MAX:
            self.dropped.popitem(last=False)
        held = self._release(key)
        if held:
            self.router.count(Drop.FRAG_NO_SESSION, len(held))

    def _record(self, key: FragKey, rec: Record) -> None:
        self.records[key] = rec
        self.records.move_to_end(key)
        while len(self.records) > RECORD_MAX:
            self.records.popitem(last=False)

    def _block(self, counter: Any) -> list[Output]:
        if counter is not None:
            counter.count += 1
        return self.router.drop(Drop.FILTER_BLOCK)

    # ------------------------------------------------------------ later

    def later(self, pkt: Pkt) -> list[Output]:
        """A fragment with offset > 0."""
        router = self.router
        now = pkt.now
        self._expire(now)
        key = frag_key(pkt.orig)
        piece = piece_of(pkt.orig)
        rec = self.records.get(key)
        if rec is not None:
            rec.last = now
            self.records.move_to_end(key)
            if rec.blocked:
                return self._block(rec.fc)
            seen = conflict(rec.pieces, piece)
            if seen == "overlap":
                return self._overlap(pkt)
            if seen is None and len(rec.pieces) < PIECES_MAX:
                rec.pieces.append(piece)
            if rec.fc is not None:
                rec.fc.count += 1
            return router.forward_fragment(pkt, rec.new_addr, rec.outbound, rec.oif, rec.nh, rec.new_dst)
        forget = self.dropped.get(key)
        if forget is not None:
            if now < forget:
                return router.drop(Drop.FRAG_NO_SESSION)
            del self.dropped[key]
        if not self._needs_first(pkt):
            return router.forward_fragment(pkt, None, False, None, None)
        if not self.requeue:
            router.log_event("frag-ooo", now, "fragment arrived before its first fragment and "
                             "fragment-requeueing is off: dropped (option ip fragment-requeueing on)")
            return router.drop(Drop.FRAG_OUT_OF_ORDER)
        group = self.held.get(key)
        if group is not None and conflict([h.piece for h in group], piece) == "overlap":
            return self._overlap(pkt)
        if self.n_held >= self.limit:
            router.log_event("frag-full", now, f"fragment requeueing holds {self.n_held} fragments "
                             "(fragment-requeueing-limit): dropped")
            return router.drop(Drop.FRAG_HOLD_FULL)
        h = HeldFragment(key, pkt.iface, pkt.orig, now, piece)
        self.held.setdefault(key, []).append(h)
        self.queue.append(h)
        self.n_held += 1
        router.count("fragments_held")
        router.wake(pkt.now + self.hold_time)
        return []

    def _needs_first(self, pkt: Pkt) -> bool:
        if self.router.fragment_needs_nat(pkt):
            return True
        filt = getattr(self.router, "filter", None)
        return filt is not None and bool(filt.needs_first_fragment)

    def _overlap(self, pkt: Pkt) -> list[Output]:
        self.router.log_event("frag-overlap", pkt.now, "fragment overlapping another fragment of its "
                              "datagram: dropped")
        return self.router.drop(Drop.FRAG_OVERLAP)

    def _release(self, key: FragKey) -> list[HeldFragment]:
        """Take the held fragments of ``key`` out of the hold, in arrival order."""
        group = self.held.pop(key, None)
        if not group:
            return []
        for h in group:
            h.alive = False
        self.n_held -= len(group)
        self._compact()
        return group

    # ------------------------------------------------------------ timers

    def _expire(self, now: float) -> None:
        """Drop held fragments older than the hold time (per fragment)."""
        q = self.queue
        expired = 0
        while q and (not q[0].alive or q[0].since + self.hold_time <= now):  # (the deadline's own sum)
            h = q.popleft()
            if not h.alive:
                continue
            h.alive = False
            group = self.held[h.key]
            group.remove(h)
            if not group:
                del self.held[h.key]
            self.n_held -= 1
            expired += 1
        if expired:
            self.router.count(Drop.FRAG_HOLD_EXPIRED, expired)
        dropped = self.dropped
        while dropped:
            key, forget = next(iter(dropped.items()))
            if forget > now:
                break
            del dropped[key]

    def _compact(self) -> None:
        """Keep the arrival queue proportional to what is held (released entries linger in it)."""
        if len(self.queue) > 2 * (self.n_held + self.limit) + 64:
            self.queue = deque(h for h in self.queue if h.alive)

    def next_deadline(self) -> float | None:
        best: float | None = None
        q = self.queue
        while q and not q[0].alive:
            q.popleft()
        if q:
            best = q[0].since + self.hold_time
        if self.records:
            t = next(iter(self.records.values())).last + RECORD_LIFETIME
            best = t if best is None else min(best, t)
        return best

    def on_timer(self, now: float) -> list[Output]:
        self._expire(now)
        while self.records:
            key, rec = next(iter(self.records.items()))
            if now < rec.last + RECORD_LIFETIME:
                break
            del self.records[key]
        return []

    def clear(self) -> None:
        self.records.clear()
        self.dropped.clear()
        self.held.clear()
        self.queue.clear()
        self.n_held = 0

    def stats(self) -> dict[str, int]:
        """What is held and remembered now (for diagnostics and memory checks)."""
        return {"held": self.n_held, "held_datagrams": len(self.held), "records": len(self.records),
                "queue": len(self.queue), "dropped": len(self.dropped)}
