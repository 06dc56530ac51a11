"""IPsec ESP passthrough (R10, R11, B1): SEIL's first-come mode and passnat's SPI mode.

ESP has no ports, and each direction's SPI is chosen by its receiver inside
encrypted IKE, so a NAT cannot read which inbound SPI pairs with which
outbound one (RFC 3715 §2.1).

``first-come`` (SEIL, ``nat option esp-passthrough first-come``): a session per
(inside host, server); every inbound ESP from a server goes to the first
inside host that talks ESP to it (先着一名問題).

``spi`` (passnat's default): per (global address, server) a *group* learns
  * outbound SPIs (chosen by the server) -> the inside host that sends them;
  * inbound SPIs (chosen by an inside host) -> that host, bound the first
    time an unknown inbound SPI arrives, to the first candidate of:
      1. the host holding the *pairing slot*: it sent a new outbound SPI that
         has no inbound partner yet, less than the pairing window ago;
      2. the host with the oldest unpaired outbound SPI;
      3. the only inside host talking ESP to that server.
    An inbound SPI whose sequence number says it is not a fresh SA (> 64)
    tries 2 before 1.
  Serialisation keeps this deterministic: one host holds the slot at a time.
  Another host's packets on a *new* outbound SPI to the same server are held
  (not sent) until the slot closes -- when its partner arrives, or after the
  pairing window -- and then released in order.  An unknown inbound SPI with
  no candidate is held for the pairing window waiting for one, then dropped
  (``esp_ambiguous_spi``).  Known SPIs, a host's rekey (a new outbound SPI of
  a host that already has SAs) and other hosts' running SAs never move.
  Inbound ESP from a server no inside host talks to is dropped
  (``esp_unsolicited``): no hole punching.

IKE hints (spi mode; UDP 500 is clear text): every IKE exchange that creates
a child SA -- IKEv2 IKE_AUTH (35) and CREATE_CHILD_SA (36), IKEv1 Quick Mode
(32) -- announces exactly one new inbound SPI of its inside host.  Its
response leaves a *pending hint* (host, time) until an inbound SPI is bound
to that host (or ``IKE_HINT`` s pass).  A fresh unknown inbound SPI (first
seen with a sequence number <= 64) while hints are pending goes only by
them: the candidates are the hosts whose hint came before the SPI was first
seen (a server cannot use an SA before answering the exchange that made it);
exactly one -- and no pairing slot held by a host without a hint -- binds
the SPI to it, creating its ESP session if it has sent no ESP yet (the server
sends first); otherwise the packet is held.  The "only member" rule never
applies while another host has a pending hint.  To keep one host at a time
between an exchange and its first inbound SPI, a child-SA exchange of another
host with the same server is held (``ike_held_for_pairing``) while one is
under way (request seen, no answer yet, at most ``IKE_REQUEST_BLOCK`` s) or
answered less than the pairing window ago and not yet bound; it is released
the moment that SPI binds, or when the window passes.
"""
from __future__ import annotations

import logging
import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from passnat.config.model import EspMode
from passnat.nat.actions import Output
from passnat.nat.drops import Drop
from passnat.nat.handlers.base import HELD, Fwd, Pkt, Priority, Verdict
from passnat.nat.handlers.other import AddressOnlyHandler
from passnat.nat.icmp_errors import Quoted
from passnat.nat.session import Session
from passnat.nat.static import SnaptTarget
from passnat.packet.ipv4 import PROTO_ESP, ntoa

if TYPE_CHECKING:
    from passnat.nat.router import Router

#: an SA whose packets carry sequence numbers above this is not new (RFC 4303 §3.3.3: starts at 1)
FRESH_SEQ = 64
#: how long after a child-SA-creating IKE exchange its host is a candidate
IKE_HINT = 10.0
#: how long an unanswered child-SA exchange keeps other hosts' exchanges with that server waiting
IKE_REQUEST_BLOCK = 2.0
#: unknown inbound SPIs remembered per group (first sequence number and time seen)
UNKNOWN_MAX = 64
#: held packets per group and direction
HOLD_MAX = 64

IKEV2_IKE_AUTH = 35
IKEV2_CREATE_CHILD_SA = 36
IKEV1_QUICK_MODE = 32
IKEV2_RESPONSE = 0x20

_SPI_SEQ = struct.Struct("!II")


@dataclass
class Held:
    iface: str
    data: bytes
    since: float
    spi: int = 0


@dataclass(eq=False)
class IkeExchange:
    """One child-SA-creating IKE exchange of an inside host with a server."""

    host: int
    key: bytes  # IKE SA initiator SPI + message ID: retransmissions and IKEv1's 3 messages are one
    request: float  # when the request was seen
    request_outbound: bool  # the request's direction (IKEv1 Quick Mode: the first message's)
    answered: float | None = None  # when the response was seen: the pending hint's time


@dataclass
class EspGroup:
    """Everything known about ESP between one global address and one server."""

    nat_if: str
    remote: int
    out_spi: dict[int, Session] = field(default_factory=dict)
    in_spi: dict[int, Session] = field(default_factory=dict)
    slot: Session | None = None
    slot_since: float = 0.0
    held_out: list[Held] = field(default_factory=list)
    held_in: list[Held] = field(default_factory=list)
    #: child-SA IKE exchanges whose new inbound SPI is not known yet, oldest first
    ike: list[IkeExchange] = field(default_factory=list)
    held_ike: list[Held] = field(default_factory=list)  # other hosts' IKE waiting for their turn
    #: unknown inbound SPIs: spi -> [first sequence number, first seen, last seen]
    unknown: dict[int, list[float]] = field(default_factory=dict)

    def members(self) -> list[Session]:
        seen: dict[int, Session] = {}
        for s in list(self.out_spi.values()) + list(self.in_spi.values()):
            if s.alive:
                seen.setdefault(s.id, s)
        return sorted(seen.values(), key=lambda s: s.created)


def _info(s: Session) -> dict[str, Any]:
    if s.info is None:
        s.info = {"out_spis": [], "in_spis": [], "unpaired": [], "unpaired_in": [], "pairs": []}
    s.info.setdefault("unpaired_in", [])
    return s.info


class EspHandler(AddressOnlyHandler):
    name = "esp"
    protocols = (PROTO_ESP,)
    priority = Priority.PROTOCOL

    def __init__(self) -> None:
        super().__init__()
        self.groups: dict[tuple[str, int], EspGroup] = {}
        self.active: set[tuple[str, int]] = set()  # groups with a slot, held packets or IKE state
        self.last_timer = float("-inf")  # the latest on_timer time (deadlines already served)

    def bind(self, router: Router) -> None:
        self.router = router
        self.mode = router.config.nat.esp_mode
        self.window = router.config.nat.esp_pairing_window

    def klass(self, proto: int) -> str:
        return "esp"

    def on_contention(self, pkt: Pkt, sessions: list[Session]) -> None:
        if self.mode is EspMode.FIRST_COME:
            super().on_contention(pkt, sessions)
            return
        self.router.log_event(f"esp-share-{sessions[0].rem_addr}", pkt.now,
                              f"{len(sessions)} inside hosts talk ESP to {ntoa(sessions[0].rem_addr)}: "
                              "inbound SPIs are paired per host (esp-passthrough spi)", logging.INFO)

    # ----------------------------------------------------------- helpers

    @staticmethod
    def _spi_seq(pkt: Pkt) -> tuple[int, int] | None:
        if pkt.ip.frag & 0x1FFF or len(pkt.buf) < pkt.ip.ihl + 8:
            return None
        spi, seq = _SPI_SEQ.unpack_from(pkt.buf, pkt.ip.ihl)
        return spi, seq

    def group(self, nat_if: str, remote: int) -> EspGroup:
        key = (nat_if, remote)
        g = self.groups.get(key)
        if g is None:
            g = self.groups[key] = EspGroup(nat_if, remote)
        return g

    def _slot_open(self, g: EspGroup, now: float) -> bool:
        return g.slot is not None and g.slot.alive and now < g.slot_since + self.window

    def _learn_out(self, g: EspGroup, s: Session, spi: int, now: float) -> bool:
        """Learn an outbound SPI of ``s``; True when it still waits for its inbound partner.

        An inside *server* (SNAPT) hears from its client first: its inbound
        SPI is already known, and the new outbound SPI pairs with it at once.
        """
        info = _info(s)
        g.out_spi[spi] = s
        info["out_spis"].append(spi)
        self.router.table.touched(s)
        if info["unpaired_in"]:
            info["pairs"].append([spi, info["unpaired_in"].pop(0)])
            return False
        info["unpaired"].append([spi, now])
        return True

    def _record_in(self, s: Session, spi: int) -> None:
        """Note inbound ``spi`` of ``s``, pairing it with its oldest unpaired outbound SPI."""
        self.router.table.touched(s)
        info = _info(s)
        info["in_spis"].append(spi)
        if info["unpaired"]:
            out_spi, _ = info["unpaired"].pop(0)
            info["pairs"].append([out_spi, spi])
        else:
            info["unpaired_in"].append(spi)

    def _bind_in(self, g: EspGroup, s: Session, spi: int, now: float) -> list[Output]:
        """Bind inbound ``spi`` to ``s``; returns packets this releases."""
        info = _info(s)
        g.in_spi[spi] = s
        g.unknown.pop(spi, None)
        self._record_in(s, spi)
        self.router.count("esp_spi_learned")
        released: list[Output] = []
        if self._consume_hint(g, s.in_addr, now):
            released.extend(self._redecide_held(g, now))
            released.extend(self._release_ike(g, now))
        if g.held_in:
            mine = [h for h in g.held_in if h.spi == spi]
            g.held_in = [h for h in g.held_in if h.spi != spi]
            for h in mine:
                released.extend(self.router.reinject(h.iface, h.data, now))
        if g.slot is s and not info["unpaired"]:
            released.extend(self._close_slot(g, now))
        self._update_active(g)
        return released

    def _consume_hint(self, g: EspGroup, host: int, now: float) -> bool:
        """An inbound SPI of ``host`` is known now: its oldest answered exchange is done."""
        for x in g.ike:
            if x.host == host and x.answered is not None:
                g.ike.remove(x)
                return True
        return False

    def _redecide_held(self, g: EspGroup, now: float) -> list[Output]:
        """A hint was used up: held unknown SPIs whose candidate is now unique go to it
        (only to hosts that already have an ESP session; the others wait for their next packet)."""
        released: list[Output] = []
        for spi in dict.fromkeys(h.spi for h in g.held_in):
            if spi in g.in_spi:
                continue
            seen = g.unknown.get(spi)
            if seen is None:
                continue
            cand = self._candidate(g, g.members(), int(seen[0]), seen[1], now, create=False)
            if isinstance(cand, Session):
                released.extend(self._bind_in(g, cand, spi, now))
        return released

    def _close_slot(self, g: EspGroup, now: float) -> list[Output]:
        g.slot = None
        held, g.held_out = g.held_out, []
        released: list[Output] = []
        for h in held:
            released.extend(self.router.reinject(h.iface, h.data, now))
        return released

    def _hold(self, g: EspGroup, queue: list[Held], pkt: Pkt, spi: int, counter: str) -> Verdict:
        """Keep ``pkt`` (as received) in one of the group's queues, for at most the window."""
        if len(queue) >= HOLD_MAX:
            return Drop.ESP_HELD_OVERFLOW
        queue.append(Held(pkt.ingress, pkt.orig, pkt.now, spi))
        self.router.count(counter)
        self.router.wake(pkt.now + self.window)
        self._update_active(g)
        return HELD

    def _update_active(self, g: EspGroup) -> None:
        key = (g.nat_if, g.remote)
        if g.slot is not None or g.held_in or g.held_out or g.ike or g.held_ike or g.unknown:
            self.active.add(key)
        else:
            self.active.discard(key)

    # --------------------------------------------------------- outbound

    def outbound(self, pkt: Pkt, nat_if: str, nh: str, create: bool) -> Verdict:
        ip = pkt.ip
        ss = self._spi_seq(pkt)
        if ss is None and not ip.frag & 0x1FFF:
            return Drop.BAD_L4
        s = self.outbound_session(pkt, nat_if, create)
        if s is None or isinstance(s, Drop):
            return s
        if ss is None:
            return self.send_out(pkt, s)
        g = self.group(nat_if, ip.dst)
        spi = ss[0]
        owner = g.out_spi.get(spi)
        if owner is s:
            return self.send_out(pkt, s)
        if owner is not None and owner.alive:
            self.router.count("esp_spi_collision")
            self.router.log_event(f"esp-collision-{spi}", pkt.now,
                                  f"ESP: {ntoa(ip.src)} and {ntoa(owner.in_addr)} both send SPI 0x{spi:08x} "
                                  f"to {ntoa(ip.dst)}")
            return self.send_out(pkt, s)
        if (self.mode is EspMode.SPI and self._slot_open(g, pkt.now) and g.slot is not s
                and not (s.info and s.info.get("unpaired_in"))):  # (an inside server's SPI pairs at once)
            return self._hold(g, g.held_out, pkt, spi, "esp_held_for_pairing")
        waiting = self._learn_out(g, s, spi, pkt.now)
        if self.mode is EspMode.SPI and waiting and g.slot is not s:
            g.slot, g.slot_since = s, pkt.now
            self._update_active(g)
            self.router.wake(pkt.now + self.window)
        return self.send_out(pkt, s)

    # ---------------------------------------------------------- inbound

    def inbound(self, pkt: Pkt) -> Verdict:
        ip = pkt.ip
        if ip.dst != self.router.globals.get(pkt.iface):
            return None
        g = self.groups.get((pkt.iface, ip.src))
        ss = self._spi_seq(pkt)
        if self.mode is EspMode.FIRST_COME:
            verdict = super().inbound(pkt)
            if (isinstance(verdict, Fwd) and verdict.session is not None and ss is not None and g is not None
                    and ss[0] not in g.in_spi):
                g.in_spi[ss[0]] = verdict.session
                self._record_in(verdict.session, ss[0])
            return verdict
        if g is None or ss is None:
            return None
        spi, seq = ss
        s = g.in_spi.get(spi)
        if s is not None and s.alive and not pkt.is_hairpin_source(s):
            return self.deliver(pkt, s)
        now = pkt.now
        self._expire_hints(g, now)
        hp = pkt.hairpin
        exclude = hp[1].in_addr if hp is not None and hp[1] is not None else None
        members = [m for m in g.members() if not pkt.is_hairpin_source(m)]
        if not members and not self._pending(g, exclude):
            return None
        seen = g.unknown.get(spi)
        if seen is None:
            seen = [seq, now, now]
            if len(g.unknown) < UNKNOWN_MAX:
                g.unknown[spi] = seen
        seen[2] = now
        cand = self._candidate(g, members, int(seen[0]), seen[1], now, exclude=exclude)
        if isinstance(cand, int):  # a hinted host without an ESP session: the server sends first
            made = self.new_session(pkt, kind="napt", nat_if=g.nat_if, host=cand, remote=g.remote)
            if isinstance(made, Drop):
                return made
            self.router.count("esp_session_from_ike_hint")
            cand = made
        if cand is None:
            return self._hold(g, g.held_in, pkt, spi, "esp_inbound_held_ambiguous")
        released = self._bind_in(g, cand, spi, now)
        fwd = self.deliver(pkt, cand)
        fwd.extra.extend(released)
        return fwd

    def _pending(self, g: EspGroup, exclude: int | None = None) -> list[IkeExchange]:
        return [x for x in g.ike if x.answered is not None and x.host != exclude]

    def _candidate(self, g: EspGroup, members: list[Session], seq: int, first_seen: float, now: float, *,
                   exclude: int | None = None, create: bool = True) -> Session | int | None:
        """Who an unknown inbound SPI belongs to: a session, a hinted host without one (an int,
        when ``create``), or None (hold).  ``seq`` and ``first_seen``: its first packet's."""
        slot = g.slot if self._slot_open(g, now) else None
        if slot is not None and slot.in_addr == exclude:
            slot = None
        pending = self._pending(g, exclude)
        if pending and seq <= FRESH_SEQ:
            # a server cannot use an SA before it answered the exchange that made it
            hosts = {x.host for x in pending if x.answered is not None and x.answered <= first_seen}
            if len(hosts) != 1:
                return None  # none yet, or several hosts' new SAs at once: wait for more
            (host,) = hosts
            if slot is not None and slot.in_addr != host:
                return None  # the slot's host waits for a partner too (an SA no exchange announced)
            for m in members:
                if m.in_addr == host:
                    return m
            return host if create else None

        def oldest_unpaired() -> Session | None:
            waiting = [(_info(s)["unpaired"][0][1], s.id, s) for s in members
                       if s.info and s.info["unpaired"]]
            return min(waiting)[2] if waiting else None

        def only() -> Session | None:
            if len(members) != 1 or any(x.host != members[0].in_addr for x in pending):
                return None  # never the sole member while an exchange names another host
            return members[0]

        for rule in ((oldest_unpaired, lambda: slot, only) if seq > FRESH_SEQ
                     else (lambda: slot, oldest_unpaired, only)):
            s = rule()
            if s is not None:
                return s
        return None

    def snapt_inbound(self, pkt: Pkt, target: SnaptTarget) -> Verdict:
        verdict = super().snapt_inbound(pkt, target)
        ss = self._spi_seq(pkt)
        if isinstance(verdict, Fwd) and verdict.session is not None and ss is not None:
            g = self.group(pkt.iface, pkt.ip.src)
            g.in_spi[ss[0]] = verdict.session
            self._record_in(verdict.session, ss[0])
        return verdict

    # ------------------------------------------------------------- IKE

    def observe_ike(self, nat_if: str, host: int, remote: int, payload: bytes, outbound: bool,
                    now: float, pkt: Pkt | None = None) -> bool:
        """Note IKE exchanges that create child SAs (UDP 500 carries IKE in clear); True when
        ``pkt`` (such an exchange's request) is held for its turn (see the module docstring)."""
        if len(payload) < 28:
            return False
        version, exch = payload[17] >> 4, payload[18]
        if not ((version == 2 and exch in (IKEV2_IKE_AUTH, IKEV2_CREATE_CHILD_SA))
                or (version == 1 and exch == IKEV1_QUICK_MODE)):
            return False
        key = payload[:8] + payload[20:24]  # initiator SPI + message ID
        g = self.group(nat_if, remote)
        self._expire_hints(g, now)
        x = next((e for e in g.ike if e.host == host and e.key == key), None)
        if version == 2:
            response = bool(payload[19] & IKEV2_RESPONSE)
        else:  # Quick Mode: the first message in the other direction answers
            response = x is not None and outbound != x.request_outbound
        if x is None and not response:
            hp = pkt.hairpin if pkt is not None else None
            other = hp[1].in_addr if hp is not None and hp[1] is not None else None
            if self.mode is EspMode.SPI and pkt is not None and self._ike_busy(g, host, other, now):
                if len(g.held_ike) >= HOLD_MAX:
                    self.router.count(Drop.ESP_HELD_OVERFLOW)
                    return False
                g.held_ike.append(Held(pkt.ingress, pkt.orig, now))
                self.router.count("ike_held_for_pairing")
                self.router.wake(now + self.window)
                self._update_active(g)
                return True
            g.ike.append(IkeExchange(host, key, now, outbound))
            self.router.wake(now + IKE_HINT)
        elif response and (x is None or x.answered is None):
            if x is None:  # the request passed before we knew the group: the answer still counts
                x = IkeExchange(host, key, now, not outbound)
                g.ike.append(x)
            x.answered = now
            self.router.count("ike_child_sa_exchanges")
            self.router.wake(now + self.window)
        self._update_active(g)
        return False

    def _ike_busy(self, g: EspGroup, host: int, other: int | None, now: float) -> bool:
        """Whether another host's child-SA exchange with this server is under way or waits for
        its first inbound SPI (``other``: the far side of a hairpinned exchange, never busy)."""
        for x in g.ike:
            if x.host == host or x.host == other:
                continue
            if x.answered is None and now < x.request + IKE_REQUEST_BLOCK:
                return True
            if x.answered is not None and now < x.answered + self.window:
                return True
        return False

    @staticmethod
    def _expire_hints(g: EspGroup, now: float) -> None:
        """Exchanges (answered or not) older than ``IKE_HINT`` name nobody any more."""
        if g.ike:
            g.ike = [x for x in g.ike if now < (x.request if x.answered is None else x.answered) + IKE_HINT]

    def _release_ike(self, g: EspGroup, now: float) -> list[Output]:
        """Let held IKE exchanges go once no other host's exchange keeps them waiting."""
        released: list[Output] = []
        if not g.held_ike:
            return released
        held, g.held_ike = g.held_ike, []
        for h in held:
            released.extend(self.router.reinject(h.iface, h.data, now))  # (held again if still busy)
        return released

    # ------------------------------------------------------------ timers

    def next_deadline(self) -> float | None:
        best: float | None = None
        for key in self.active:
            g = self.groups.get(key)
            if g is None:
                continue
            times = ([g.slot_since + self.window] if g.slot is not None else []) + \
                [h.since + self.window for h in g.held_in[:1]]
            if g.held_ike:
                times.extend(self._ike_turns(g))
            times.extend((x.answered if x.answered is not None else x.request) + IKE_HINT for x in g.ike[:1])
            times.extend(v[2] + IKE_HINT for v in list(g.unknown.values())[:1])
            for t in times:
                if best is None or t < best:
                    best = t
        return best

    def _ike_turns(self, g: EspGroup) -> list[float]:
        """When the exchanges that keep held IKE waiting stop doing so (the next such moment)."""
        turns = [x.request + IKE_REQUEST_BLOCK if x.answered is None else x.answered + self.window for x in g.ike]
        return [min(t for t in turns if t > self.last_timer)] if any(t > self.last_timer for t in turns) else []

    def on_timer(self, now: float) -> list[Output]:
        self.last_timer = max(self.last_timer, now)
        out: list[Output] = []
        for key in list(self.active):
            g = self.groups.get(key)
            if g is None:
                self.active.discard(key)
                continue
            expired = [h for h in g.held_in if h.since + self.window <= now]  # (the deadline's own sum)
            if expired:
                g.held_in = [h for h in g.held_in if h.since + self.window > now]
                self.router.count(Drop.ESP_AMBIGUOUS, len(expired))
                self.router.log_event(f"esp-ambiguous-{g.remote}", now,
                                      f"ESP from {ntoa(g.remote)}: {len(expired)} packet(s) with an SPI "
                                      "no inside host could be told apart for; dropped")
            if g.slot is not None and (not g.slot.alive or g.slot_since + self.window <= now):
                self.router.count("esp_pairing_window_expired")
                out.extend(self._close_slot(g, now))
            self._expire_hints(g, now)
            if g.unknown:  # an unknown SPI is forgotten once nothing arrives on it for IKE_HINT s
                g.unknown = {k: v for k, v in g.unknown.items() if now < v[2] + IKE_HINT}
            if g.held_ike:
                out.extend(self._release_ike(g, now))
            self._update_active(g)
            if not (g.out_spi or g.in_spi or g.held_out or g.held_in or g.ike or g.held_ike or g.unknown):
                self.groups.pop(key, None)
                self.active.discard(key)
        return out

    # ---------------------------------------------------------- sessions

    def on_remove(self, s: Session) -> None:
        super().on_remove(s)
        g = self.groups.get((s.nat_if, s.rem_addr))
        if g is None:
            return
        g.out_spi = {k: v for k, v in g.out_spi.items() if v is not s}
        g.in_spi = {k: v for k, v in g.in_spi.items() if v is not s}
        if g.slot is s:
            g.slot = None
        if not (g.out_spi or g.in_spi or g.held_out or g.held_in or g.ike or g.held_ike):
            self.groups.pop((s.nat_if, s.rem_addr), None)
            self.active.discard((s.nat_if, s.rem_addr))

    def restore(self, s: Session) -> bool:
        if not super().restore(s):
            return False
        g = self.group(s.nat_if, s.rem_addr)
        info = _info(s)
        for spi in info["out_spis"]:
            g.out_spi[spi] = s
        for spi in info["in_spis"]:
            g.in_spi[spi] = s
        return True

    def update_info(self, s: Session, info: dict[str, Any] | None) -> None:
        """The peer router's newer SPI data for a session this router has (HA sync, passnat/ha):
        SPIs it learned since are bound here too, also when another session still holds one here
        -- the record is newer: the master binds an SPI again only once its old owner has ended,
        and that end may come in a later message (as ``restore`` does for a new session)."""
        s.info = dict(info) if info else None
        g = self.group(s.nat_if, s.rem_addr)
        fresh = _info(s)
        for table, spis in ((g.out_spi, fresh["out_spis"]), (g.in_spi, fresh["in_spis"])):
            for spi in spis:
                table[spi] = s

    def error_session(self, q: Quoted, outbound: bool) -> tuple[Session, int | None] | None:
        if not outbound:
            nat_if = self.router.nat_globals.get(q.src)
            g = self.groups.get((nat_if, q.dst)) if nat_if is not None else None
            s = g.out_spi.get(q.spi) if g is not None else None
            if s is not None and s.alive:
                return s, None
            if self.mode is EspMode.SPI:
                return None
        return super().error_session(q, outbound)

    def describe(self, s: Session) -> dict[str, Any]:
        info = s.info or {}
        g = self.groups.get((s.nat_if, s.rem_addr))
        if self.mode is EspMode.FIRST_COME:
            owner = self.owner(PROTO_ESP, s.nat_if, s.rem_addr)
            state = "owner" if owner is s else "shadowed (inbound goes to the first host)"
        elif info.get("unpaired"):
            state = "pairing" if g is not None and g.slot is s else "waiting for inbound SPI"
        elif info.get("unpaired_in"):
            state = "waiting for outbound SPI"
        else:
            state = "paired"
        return {"esp": {"mode": self.mode.value, "state": state,
                        "out_spis": [f"0x{x:08x}" for x in info.get("out_spis", [])],
                        "in_spis": [f"0x{x:08x}" for x in info.get("in_spis", [])],
                        "pairs": [[f"0x{a:08x}", f"0x{b:08x}"] for a, b in info.get("pairs", [])]}}
