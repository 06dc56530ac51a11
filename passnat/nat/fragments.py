"""Fragment translation and requeueing (R21, R22).

Only the first fragment (offset 0) carries the transport header, so it alone
can choose a session.  ``first()`` records, per datagram (source, destination,
protocol, IP id as received), what the router did with it: the address it
rewrote and the egress.  Later fragments of that datagram get the same
treatment in ``later()``.

A later fragment that arrives before its first fragment, where the
translation matters (it arrived on a NAT interface or leaves through one):
  * ``option ip fragment-requeueing on`` (passnat's default, RFC 4787 REQ-14):
    held until the first fragment arrives, then sent right after it; at most
    ``fragment-requeueing-limit`` (256) fragments are held in total, each for
    at most ``fragment-requeueing-timeout`` (5 s) -- the 257th is dropped
    (``fragment_hold_full``), expired ones are dropped
    (``fragment_hold_expired``);
  * off (SEIL's default): dropped (``fragment_out_of_order``).
Fragments that never touch NAT are routed as they come.

Records live ``RECORD_LIFETIME`` seconds after the last fragment seen (as IP
reassembly would), bounded by ``RECORD_MAX`` (oldest evicted first), so a
fragment flood cannot grow memory and never disturbs unfragmented traffic.
"""
from __future__ import annotations

import struct
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

from passnat.nat.actions import Output
from passnat.nat.drops import Drop
from passnat.nat.handlers.base import Pkt

if TYPE_CHECKING:
    from passnat.nat.router import Router

RECORD_LIFETIME = 30.0
RECORD_MAX = 8192

FragKey = tuple[int, int, int, int]  # (src, dst, proto, ident) as received


def frag_key(buf: bytes | bytearray) -> FragKey:
    ident = (buf[4] << 8) | buf[5]
    src, dst = struct.unpack_from("!II", buf, 12)
    return (src, dst, buf[9], ident)


@dataclass(slots=True)
class Record:
    """What the router did with a datagram's first fragment."""

    new_addr: int | None  # the address NAT wrote, or None
    outbound: bool  # True: the source was rewritten; False: the destination
    oif: str
    nh: str
    last: float


@dataclass(slots=True)
class HeldFragment:
    iface: str
    data: bytes
    since: float


class FragmentTracker:
    def __init__(self, router: Router):
        self.router = router
        self.records: OrderedDict[FragKey, Record] = OrderedDict()
        self.held: OrderedDict[FragKey, list[HeldFragment]] = OrderedDict()
        self.n_held = 0
        self.configure()

    def configure(self) -> None:
        opts = self.router.config.options
        self.requeue = opts.fragment_requeueing
        self.limit = opts.fragment_requeueing_limit
        self.hold_time = float(opts.fragment_requeueing_timeout)

    # ------------------------------------------------------------ first

    def first(self, pkt: Pkt, oif: str, nh: str, new_addr: int | None, outbound: bool) -> list[Output]:
        """Record the first fragment's treatment; returns held later fragments, processed."""
        key = frag_key(pkt.orig)
        self.records[key] = Record(new_addr, outbound, oif, nh, pkt.now)
        self.records.move_to_end(key)
        while len(self.records) > RECORD_MAX:
            self.records.popitem(last=False)
        held = self.held.pop(key, None)
        if not held:
            return []
        self.n_held -= len(held)
        self.router.count("fragments_requeued", len(held))
        out: list[Output] = []
        for h in held:
            out.extend(self.router.reinject(h.iface, h.data, pkt.now))
        return out

    # ------------------------------------------------------------ later

    def later(self, pkt: Pkt) -> list[Output]:
        """A fragment with offset > 0."""
        router = self.router
        key = frag_key(pkt.orig)
        rec = self.records.get(key)
        if rec is not None:
            rec.last = pkt.now
            self.records.move_to_end(key)
            return router.forward_fragment(pkt, rec.new_addr, rec.outbound, rec.oif, rec.nh)
        if not router.fragment_needs_nat(pkt):
            return router.forward_fragment(pkt, None, False, None, None)
        if not self.requeue:
            router.log_event("frag-ooo", pkt.now, "fragment arrived before its first fragment and "
                             "fragment-requeueing is off: dropped (option ip fragment-requeueing on)")
            return router.drop(Drop.FRAG_OUT_OF_ORDER)
        if self.n_held >= self.limit:
            router.log_event("frag-full", pkt.now, f"fragment requeueing holds {self.n_held} fragments "
                             "(fragment-requeueing-limit): dropped")
            return router.drop(Drop.FRAG_HOLD_FULL)
        self.held.setdefault(key, []).append(HeldFragment(pkt.iface, pkt.orig, pkt.now))
        self.n_held += 1
        router.count("fragments_held")
        return []

    # ------------------------------------------------------------ timers

    def next_deadline(self) -> float | None:
        best: float | None = None
        if self.held:
            first = next(iter(self.held.values()))
            best = first[0].since + self.hold_time
        if self.records:
            t = next(iter(self.records.values())).last + RECORD_LIFETIME
            best = t if best is None else min(best, t)
        return best

    def on_timer(self, now: float) -> list[Output]:
        while self.held:
            key, frags = next(iter(self.held.items()))
            if now - frags[0].since < self.hold_time:
                break
            del self.held[key]
            self.n_held -= len(frags)
            self.router.count(Drop.FRAG_HOLD_EXPIRED, len(frags))
        while self.records:
            key, rec = next(iter(self.records.items()))
            if now - rec.last < RECORD_LIFETIME:
                break
            del self.records[key]
        return []

    def clear(self) -> None:
        self.records.clear()
        self.held.clear()
        self.n_held = 0
