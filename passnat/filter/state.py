"""Filter states (``state enable``): the flows a pass rule let through (R16).

A state is made when a packet passes a ``state enable`` rule.  It belongs to
the flow as the filter saw that packet: protocol, source, source port,
destination, destination port (ports 0 for protocols without ports, the
query id in both for ICMP queries).  Because inbound rules see post-NAT and
outbound rules pre-NAT addresses, both directions of a translated flow have
the same private-side key, so one state covers TCP, UDP, ICMP queries, ESP
and GRE alike.  The table indexes every state under its key and under the
reverse key (the replies).

What a state lets through is decided by the filter (``engine``); this module
keeps the states and their timers:
  * each state has its own idle timer: ``state-ttl <seconds>``, or for
    ``normal`` the NAT idle timer of the flow's protocol, and after a TCP
    RST or FINs both ways the short closing timer;
  * a state is refreshed by every packet it passes; packets of a NAT flow
    it passes on the fast path refresh the flow's session, and the sessions
    linked to a state count as its activity (``last_seen``);
  * expiry is lazy, like the session table's: a heap holds at most one live
    deadline per state (``State.hd``), re-queued when popped early; a new
    earlier deadline is announced through ``on_deadline`` (the router's
    ``wake``), so the router runs its timer on time even between calls to
    ``next_deadline``;
  * at most ``maximum`` states exist; beyond that no state is made (counted).
"""
from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Any

Key = tuple[int, int, int, int, int]  # (protocol, source, source port, destination, destination port)
Point = tuple[str, bool]  # (interface, inbound)

#: states at most (SEIL x86 Fuji / BPV4 keep 65536 per address family)
STATE_MAX = 65536

FIN_ORIG = 1
FIN_REPLY = 2


def reverse(key: Key) -> Key:
    proto, src, sport, dst, dport = key
    return (proto, dst, dport, src, sport)


class Tally:
    """A state's count of the packets the fast path passed for it (the ``H_FC`` of the hops of the
    sessions it passes).  Separate from the State, which lists those sessions: a hop holding the
    State itself would make every such session part of a reference cycle (table.py untracks
    sessions from the cycle collector, so they must hold none)."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0


class State:
    __slots__ = (
        "alive",
        "count",
        "tally",
        "created",
        "fins",
        "fixed",
        "hd",
        "id",
        "key",
        "klass",
        "last",
        "origins",
        "rule",
        "sessions",
        "timer",
        "ttl",
    )

    def __init__(self, *, id: int, key: Key, rule: str, origin: Point, ttl: float, fixed: bool,
                 klass: str, now: float):
        self.id = id
        self.key = key
        self.rule = rule  # name of the rule that made it
        self.origins: set[Point] = {origin}  # filter points where its own direction passes
        self.timer = ttl  # the configured (or normal) idle time
        self.fixed = fixed  # True: state-ttl <seconds> (no closing timer)
        self.ttl = ttl  # the idle time now in force
        self.klass = klass  # NAT timer class used for ``normal``
        self.created = now
        self.last = now
        self.count = 0  # filter decisions it made on the slow path
        self.tally = Tally()  # ... and on the fast path (``decisions`` adds them up)
        self.sessions: list[Any] = []  # NAT sessions whose fast-path flows it passes
        self.fins = 0
        self.hd = 0.0
        self.alive = True

    def decisions(self) -> int:
        """Every packet this state passed (slow and fast path)."""
        return self.count + self.tally.count

    def last_seen(self) -> float:
        """The last time the flow was active: its own refreshes and its linked sessions'."""
        last = self.last
        live = []
        for s in self.sessions:
            if s.alive:
                live.append(s)
                last = max(last, s.last)
        if len(live) != len(self.sessions):
            self.sessions = live
        return last

    def deadline(self) -> float:
        return self.last_seen() + self.ttl

    def remaining(self, now: float) -> float:
        return max(0.0, self.deadline() - now)

    def link(self, session: Any) -> None:
        if session not in self.sessions:
            self.sessions.append(session)


class StateTable:
    """States by key and reverse key, by id, and their expiry heap."""

    def __init__(self, maximum: int = STATE_MAX):
        self.maximum = maximum
        self.index: dict[Key, State] = {}
        self.by_id: dict[int, State] = {}
        self._heap: list[tuple[float, int]] = []
        self._next_id = 1
        self.created_total = 0
        self.expired_total = 0
        self.full_total = 0
        self.on_remove: Callable[[State], None] = lambda st: None
        self.on_deadline: Callable[[float], None] = lambda t: None  # the router's wake()
        #: states made, changed or removed since the HA sync last looked (passnat/ha); None: no peer
        self.changed: set[State] | None = None

    def __len__(self) -> int:
        return len(self.by_id)

    def get(self, key: Key, now: float | None = None) -> State | None:
        """The live state covering ``key`` (either direction); expires it first when due."""
        st = self.index.get(key)
        if st is None:
            return None
        if now is not None and now >= st.last + st.ttl and st.deadline() <= now:
            self.remove(st, expired=True)
            return None
        return st

    def add(self, key: Key, *, rule: str, origin: Point, ttl: float, fixed: bool, klass: str,
            now: float) -> State | None:
        """Make a state for ``key`` (None when the table is full)."""
        if len(self.by_id) >= self.maximum:
            self.full_total += 1
            return None
        st = State(id=self._next_id, key=key, rule=rule, origin=origin, ttl=ttl, fixed=fixed, klass=klass,
                   now=now)
        self._next_id += 1
        self.by_id[st.id] = st
        self.index[key] = st
        self.index.setdefault(reverse(key), st)
        st.hd = now + ttl
        heapq.heappush(self._heap, (st.hd, st.id))
        self.on_deadline(st.hd)
        self.created_total += 1
        if self.changed is not None:
            self.changed.add(st)
        return st

    def set_ttl(self, st: State, ttl: float) -> None:
        """Change the idle time in force; a shorter one is queued so expiry is on time."""
        st.ttl = ttl
        if self.changed is not None:
            self.changed.add(st)
        exp = st.last_seen() + ttl
        if exp < st.hd:
            st.hd = exp
            heapq.heappush(self._heap, (exp, st.id))
            self.on_deadline(exp)

    def remove(self, st: State, *, expired: bool = False) -> None:
        if not st.alive:
            return
        st.alive = False
        self.by_id.pop(st.id, None)
        for k in (st.key, reverse(st.key)):
            if self.index.get(k) is st:
                del self.index[k]
        if expired:
            self.expired_total += 1
        if self.changed is not None:
            self.changed.add(st)
        self.on_remove(st)

    def clear(self) -> int:
        states = list(self.by_id.values())
        for st in states:
            self.remove(st)
        self._heap.clear()
        return len(states)

    def next_deadline(self) -> float | None:
        heap = self._heap
        while heap:
            dl, sid = heap[0]
            st = self.by_id.get(sid)
            if st is None or st.hd != dl:
                heapq.heappop(heap)  # stale entry
                continue
            real = st.deadline()
            if real <= dl:
                return dl
            st.hd = real  # refreshed since queued: move it to its real deadline
            heapq.heapreplace(heap, (real, sid))
        return None

    def expire(self, now: float) -> list[State]:
        """Remove every state idle for its whole timer; returns them."""
        heap = self._heap
        gone: list[State] = []
        while heap and heap[0][0] <= now:
            dl, sid = heapq.heappop(heap)
            st = self.by_id.get(sid)
            if st is None or st.hd != dl:
                continue
            exp = st.deadline()
            if exp <= now:
                self.remove(st, expired=True)
                gone.append(st)
            else:
                st.hd = exp
                heapq.heappush(heap, (exp, sid))
                if self.changed is not None:
                    self.changed.add(st)  # alive: the peer's copy gets the new idle time
        return gone
