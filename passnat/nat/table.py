"""The session table: the only way sessions are created, found, refreshed and removed.

(libalias alias_db.c: "Data is accessed by function calls".)

Indexes:
  * ``out_flows[proto]`` / ``in_flows[proto]``: 12-byte keys exactly as the
    wire carries them (src, dst, sport, dport at IPv4 bytes 12-23) -> the
    Session, which carries the rewrite for each direction (flow.py).  TCP and
    UDP use them on the fast path; ICMP echo uses the same shape with (id, 0)
    as ports.
  * the expiry wheel holds every live session once (``all()`` and ``get()``
    read it; show / clear are rare, so no id index costs memory per session).
  * ``mappings``: endpoint-independent mappings, and one ``IdPool`` of
    outside ports per (protocol, global address).
  * ``kinds``: live sessions by (protocol, type), and ``vpn``: the VPN sessions
    (ESP, GRE, AH, PPTP control, IKE and NAT-T) by id -- kept as sessions come
    and go, so metrics and the status page never walk the whole table.

Expiry is lazy: a refresh only stores ``last``.  Each session has one
*primary* timer entry, fired at ``Session.hd``: either in a one-second bucket
of the wheel (``hd`` is the bucket's second, an int shared by the bucket, so a
session costs the wheel one list slot) or, once it is due within the current
second, in a small heap of exact deadlines.  A fired entry removes the session
if it was idle for its whole timeout, else files it again at its new deadline.
A session whose timer was *shortened* (TCP closing, answered ICMP) also gets
an exact entry in that heap so it still expires on time.  So a session expires
exactly when ``now`` reaches ``last + timeout``, and adding one is a dict get
and a list append (no Python-level comparisons).

Sessions are not seen by Python's cycle collector (``_speedups.untrack``, when
the C module is built), nor the wheel's lists: a session refers only to plain
values, shared hops and its mapping, and ``remove`` drops its hops (the one way
back to it, through a filter state's list of sessions, passes there), so
reference counting frees every session; a table of a million sessions would
otherwise cost every full collection about half a second of pause, every time
the table turned over a quarter of its sessions.  The index dicts are tracked from the start
(``tracked_dict``) and the daemon freezes what exists when it starts
(``gc.freeze``), so they are out of every collection too.

Limits (R18): a global maximum, ``restricted-per-ip`` (sessions created by
packets from one source address, either side) and ``restricted-per-private-ip``
(sessions involving one private address; by default a quarter of the table).
Reaching one drops the packet; the router counts and logs "nat session is full".

Fairness (R29, issue 13): a full table makes room by evicting the oldest
session that never saw a reply of the inside host holding the most such
sessions (``make_room``).  Only plain NAPT sessions (TCP, UDP other than IKE,
ICMP queries) waiting for their first reply (``Session.ur == UR_IN``) are
candidates; a session with two-way traffic, SNAPT, static or dynamic NAT, ESP,
GRE, PPTP and IKE never are.  Each inside host has a FIFO (a deque) of its
unreplied sessions and a count of the live ones; hosts sit in buckets by that
count, with the largest count kept, so finding the victim is O(1).  A session
that gets its reply or goes leaves its entry in the deque (skipped when met:
``ur`` tells); a deque grown past twice its live count plus a little when a
session is added, or four times when one leaves, is rebuilt, so every operation
is O(1) amortised and a deque never holds more than about four times its host's
unreplied sessions; a host without any loses its deque.
"""
from __future__ import annotations

import heapq
import math
import random
import struct
from collections import deque
from collections.abc import Callable
from typing import Any

from passnat.nat.drops import Drop
from passnat.nat.ports import IdPool
from passnat.nat.session import UR_IN, Mapping, Session
from passnat.speedups import module as _speedups_module

_untrack = getattr(_speedups_module(), "untrack", None)

KEY = struct.Struct("!IIHH")


def tracked_dict() -> dict:  # type: ignore[type-arg]
    """A dict that the cycle collector tracks from the start and never stops tracking, so that
    ``gc.freeze`` at daemon start takes it out of every later collection.  (A dict with no
    container in it is untracked by the next collection, and tracked again -- as a young object,
    scanned whole by every full collection -- when a session is put in.)  Its one extra entry,
    ``None: []``, is what keeps it tracked; no lookup uses ``None``, nothing iterates these."""
    return {None: []}


_VPN_PROTOCOLS = frozenset((47, 50, 51))  # GRE, ESP, AH
_IKE_PORTS = frozenset((500, 4500))


def _is_vpn(s: Session) -> bool:
    if s.proto == 6 or s.proto == 1:
        return s.handler == "pptp"
    if s.proto == 17:
        return s.in_port in _IKE_PORTS or s.rem_port in _IKE_PORTS
    return s.proto in _VPN_PROTOCOLS


def flow_key(src: int, dst: int, sport: int, dport: int) -> bytes:
    return KEY.pack(src, dst, sport, dport)


class SessionTable:
    def __init__(self, *, maximum: int, per_ip: int | None, per_private_ip: int | None,
                 rng: random.Random | None = None):
        self.maximum = maximum
        self.per_ip = per_ip
        self.per_private_ip = per_private_ip
        self.rng = rng  # random port assignment when set
        self._n = 0  # live sessions
        self.out_flows: dict[int, dict[bytes, Session]] = {p: tracked_dict() for p in (6, 17, 1)}
        self.in_flows: dict[int, dict[bytes, Session]] = {p: tracked_dict() for p in (6, 17, 1)}
        self.mappings: dict[tuple[int, str, int, int], Mapping] = tracked_dict()
        self.pools: dict[tuple[int, int], IdPool] = {}
        self.reserved: dict[tuple[int, int], frozenset[int]] = {}
        self.count_src: dict[int, int] = {}
        self.count_private: dict[int, int] = {}
        #: expiry wheel: second -> [that second (the int object sessions share as hd), sessions...]
        self._wheel: dict[int, list[object]] = {}
        self._seconds: list[int] = []  # heap of the wheel's seconds
        self._exact: list[tuple[float, int, Session]] = []  # heap: exact deadlines (due soon, shortened)
        self._next_id = 1
        self.on_remove: Callable[[Session], None] = lambda s: None
        self.on_deadline: Callable[[float], None] = lambda t: None  # the router's wake()
        self.created_total = 0
        self.kinds: dict[tuple[int, str], int] = {}
        self.vpn: dict[int, Session] = tracked_dict()
        #: sessions whose saved state changed since the HA sync last looked (passnat/ha): None
        #: unless a sync peer wants them; a set add per change (made, removed, timer class)
        self.changed: set[Session] | None = None
        # unreplied NAPT sessions per inside host (fairness: make_room)
        self._ur: dict[int, list[Any]] = tracked_dict()  # host -> [live count, deque: oldest first]
        self._ur_hosts: dict[int, set[int]] = {}  # count -> the hosts with that many
        self._ur_max = 0  # the largest count
        self.ur_work = 0  # queue entries read by make_room and compaction (tests: O(1) amortised)
        self.evicted_total = 0

    def touched(self, s: Session) -> None:
        """Note that ``s``'s saved state changed (handlers: ESP SPIs, PPTP calls)."""
        if self.changed is not None:
            self.changed.add(s)

    def __len__(self) -> int:
        return self._n

    def _live(self) -> dict[int, Session]:
        found: dict[int, Session] = {}
        for bucket in self._wheel.values():
            for s in bucket[1:]:
                if s.alive:  # type: ignore[attr-defined]
                    found[s.id] = s  # type: ignore[attr-defined,assignment]
        for _, sid, es in self._exact:
            if es.alive:
                found[sid] = es
        return found

    def all(self) -> list[Session]:
        """Every live session, oldest first."""
        live = self._live()
        return [live[i] for i in sorted(live)]

    def vpn_sessions(self) -> list[Session]:
        """The live VPN sessions (ESP, GRE, AH, PPTP control, IKE and NAT-T), oldest first."""
        return [s for i, s in sorted((k, v) for k, v in self.vpn.items() if k is not None) if s.alive]

    def get(self, session_id: int) -> Session | None:
        return self._live().get(session_id)

    # ---------------------------------------------------------------- limits

    def admit(self, origin: int, private: int) -> Drop | None:
        """Why a new session for these addresses may not be created, or None."""
        if self._n >= self.maximum:
            return Drop.SESSION_FULL
        if self.per_ip is not None and self.count_src.get(origin, 0) >= self.per_ip:
            return Drop.SESSION_LIMIT_IP
        if self.per_private_ip is not None and self.count_private.get(private, 0) >= self.per_private_ip:
            return Drop.SESSION_LIMIT_PRIVATE_IP
        return None

    def make_room(self, origin: int, private: int) -> Session | None:
        """When the table is full and the per-address limits would admit a session for these
        addresses: evict the oldest unreplied session of the host holding the most, and return it
        (None: nothing evicted)."""
        if self._n < self.maximum or self._ur_max == 0:
            return None
        if self.per_ip is not None and self.count_src.get(origin, 0) >= self.per_ip:
            return None
        if self.per_private_ip is not None and self.count_private.get(private, 0) >= self.per_private_ip:
            return None
        hosts = self._ur_hosts[self._ur_max]
        host = hosts.pop()  # (set.pop resumes where it left off: O(1) amortised)
        hosts.add(host)
        queue: deque[Session] = self._ur[host][1]
        while True:
            s = queue.popleft()
            self.ur_work += 1
            if s.ur == UR_IN and s.alive:
                break
        self.remove(s)
        self.evicted_total += 1
        return s

    def unreplied(self, host: int) -> int:
        """Live unreplied NAPT sessions of inside ``host`` (the eviction candidates)."""
        st = self._ur.get(host)
        return 0 if st is None else int(st[0])

    def _ur_add(self, s: Session) -> None:
        host = s.in_addr
        buckets = self._ur_hosts
        st = self._ur.get(host)
        if st is None:
            queue: deque[Session] = deque((s,))
            if _untrack is not None:
                _untrack(queue)  # (untracked sessions only: no cycle through it)
            self._ur[host] = [1, queue]
            bucket = buckets.get(1)
            if bucket is None:
                buckets[1] = {host}
            else:
                bucket.add(host)
            if self._ur_max == 0:
                self._ur_max = 1
            return
        n = st[0]
        bucket = buckets[n]
        n += 1
        st[0] = n
        more = buckets.get(n)
        if len(bucket) == 1:  # (it held this host only: it moves up as it is)
            del buckets[n - 1]
            if more is None:
                buckets[n] = bucket
            else:
                more.add(host)
        else:
            bucket.discard(host)
            if more is None:
                buckets[n] = {host}
            else:
                more.add(host)
        if n > self._ur_max:
            self._ur_max = n
        queue = st[1]
        queue.append(s)
        if len(queue) > 2 * n + 16:  # mostly answered or gone: keep the live ones, in order
            self._compact(st)

    def _compact(self, st: list[Any]) -> None:
        """Rebuild a host's queue with its live unreplied sessions, in order.  It runs when the
        queue is at least twice the live count (plus a margin), so it costs O(1) per entry ever
        added (``ur_work`` counts the entries it reads)."""
        old = st[1]
        self.ur_work += len(old)
        queue = st[1] = deque(x for x in old if x.ur == UR_IN and x.alive)
        if _untrack is not None:
            _untrack(queue)

    def _ur_drop(self, host: int) -> None:
        """One unreplied session of ``host`` fewer (it got its reply or went)."""
        buckets = self._ur_hosts
        st = self._ur[host]
        n = st[0]
        bucket = buckets[n]
        if len(bucket) == 1:
            del buckets[n]
            if n == self._ur_max:
                self._ur_max = n - 1
        else:
            bucket.discard(host)
        n -= 1
        if n:
            st[0] = n
            fewer = buckets.get(n)
            if fewer is None:
                buckets[n] = {host}
            else:
                fewer.add(host)
            if len(st[1]) > 4 * n + 64:  # (so answered and removed sessions never pile up)
                self._compact(st)
        else:
            del self._ur[host]

    def replied(self, s: Session) -> None:
        """``s`` saw its first reply: it is no longer an eviction candidate (the caller changes
        its timer and flows)."""
        if s.ur == UR_IN and s.alive:
            self._ur_drop(s.in_addr)
        s.ur = 0

    def new_id(self) -> int:
        i = self._next_id
        self._next_id += 1
        return i

    def next_id_value(self) -> int:
        return self._next_id

    def bump_id(self, at_least: int) -> None:
        """Never reuse ids of restored sessions."""
        self._next_id = max(self._next_id, at_least)

    # ------------------------------------------------------------- ports

    def pool(self, proto: int, out_addr: int) -> IdPool:
        key = (proto, out_addr)
        p = self.pools.get(key)
        if p is None:
            p = self.pools[key] = IdPool(self.rng, self.reserved.get(key, frozenset()))
        return p

    def set_reserved(self, reserved: dict[tuple[int, int], frozenset[int]]) -> None:
        """Ports that SNAPT listens on, per (protocol, global address): never allocated."""
        self.reserved = reserved
        for key, pool in self.pools.items():
            pool.reserved = reserved.get(key, frozenset())

    def mapping_for(self, proto: int, nat_if: str, in_addr: int, in_port: int, out_addr: int,
                    lo: int, hi: int, *, keep: bool = True) -> Mapping | None:
        """The endpoint-independent mapping of an inside endpoint, made if needed."""
        key = (proto, nat_if, in_addr, in_port)
        m = self.mappings.get(key)
        if m is not None:
            return m
        pool = self.pools.get((proto, out_addr)) or self.pool(proto, out_addr)
        port = pool.take(in_port, lo, hi, None, keep_if_free=keep)
        if port is None:
            return None  # O(1) whatever the pattern, also when the range is exhausted (ports.py)
        m = pool.used[port] = Mapping(proto, nat_if, in_addr, in_port, out_addr, port)
        if _untrack is not None:
            _untrack(m)  # (ints and a str: no cycle through it, like the sessions)
        self.mappings[key] = m
        return m

    def claim_mapping(self, proto: int, nat_if: str, in_addr: int, in_port: int, out_addr: int,
                      out_port: int) -> Mapping | None:
        """Recreate a mapping with a known outside port (restore, SNAPT)."""
        key = (proto, nat_if, in_addr, in_port)
        m = self.mappings.get(key)
        if m is not None:
            return m if (m.out_addr, m.out_port) == (out_addr, out_port) else None
        m = Mapping(proto, nat_if, in_addr, in_port, out_addr, out_port)
        if _untrack is not None:
            _untrack(m)
        if not self.pool(proto, out_addr).claim(out_port, m):
            return None
        self.mappings[key] = m
        return m

    def _drop_mapping_ref(self, m: Mapping) -> None:
        m.refs -= 1
        if m.refs <= 0:
            self.mappings.pop((m.proto, m.nat_if, m.in_addr, m.in_port), None)
            pool = self.pools.get((m.proto, m.out_addr))
            if pool is not None:
                pool.release(m.out_port, m)

    # ------------------------------------------------------------- sessions

    def add(self, s: Session, okey: bytes | None = None, ikey: bytes | None = None) -> None:
        """Register a new session (limits checked with ``admit``), indexed under ``okey``/``ikey``
        when given (``set_flows`` does it later otherwise)."""
        self._n += 1
        origin, private = s.origin, s.in_addr
        counts = self.count_src
        counts[origin] = counts.get(origin, 0) + 1
        counts = self.count_private
        counts[private] = counts.get(private, 0) + 1
        if s.mapping is not None:
            s.mapping.refs += 1
        self.created_total += 1
        kinds, kind = self.kinds, (s.proto, s.kind)
        kinds[kind] = kinds.get(kind, 0) + 1
        if _is_vpn(s):
            self.vpn[s.id] = s
        if self.changed is not None:
            self.changed.add(s)
        if _untrack is not None:
            _untrack(s)
        if s.ur == UR_IN:  # _ur_add, its common case inline (this runs for most new sessions)
            st = self._ur.get(private)
            if st is None:
                self._ur_add(s)
            else:
                buckets = self._ur_hosts
                n = st[0]
                at_n = buckets[n]
                n += 1
                st[0] = n
                if len(at_n) == 1 and n not in buckets:  # alone at its count: the set moves up with it
                    del buckets[n - 1]
                    buckets[n] = at_n
                    if n > self._ur_max:
                        self._ur_max = n
                    waiting = st[1]
                    waiting.append(s)
                    if len(waiting) > 2 * n + 16:
                        self._compact(st)
                else:
                    st[0] = n - 1
                    self._ur_add(s)
        if okey is not None:
            self.out_flows[s.proto][okey] = s
            s.okey = okey
        if ikey is not None:
            self.in_flows[s.proto][ikey] = s
            s.ikey = ikey
        # _file, inline (this runs for every new session)
        last = s.last
        exp = last + s.timeout
        sec = int(exp)
        if sec > exp:
            sec -= 1  # floor of a negative time
        if sec > last:
            bucket = self._wheel.get(sec)
            if bucket is None:
                bucket = self._bucket(sec)
            s.hd = bucket[0]  # type: ignore[assignment]
            bucket.append(s)
        else:
            self._file(s, exp, last)

    def _file(self, s: Session, exp: float, now: float) -> None:
        """Give ``s`` its primary timer entry for deadline ``exp`` (not yet due at ``now``)."""
        sec = math.floor(exp)
        if sec > now:  # (add() has a copy of this)
            bucket = self._wheel.get(sec)
            if bucket is None:
                bucket = self._bucket(sec)
            s.hd = bucket[0]  # type: ignore[assignment]
            bucket.append(s)
        else:  # due within this second: an exact entry
            s.hd = exp
            heapq.heappush(self._exact, (exp, s.id, s))
            self.on_deadline(exp)

    def _bucket(self, sec: int) -> list[object]:
        """A new second of the wheel (a list of untracked sessions: untracked itself)."""
        bucket: list[object] = [sec]
        self._wheel[sec] = bucket
        if _untrack is not None:
            _untrack(bucket)
        heapq.heappush(self._seconds, sec)
        self.on_deadline(sec)
        return bucket

    def set_flows(self, s: Session, okey: bytes | None, ikey: bytes | None) -> None:
        """Index the session under its keys (replacing any keys it had)."""
        proto = s.proto
        self._unindex(s)
        if okey is not None:
            self.out_flows[proto][okey] = s
        if ikey is not None:
            self.in_flows[proto][ikey] = s
        s.okey, s.ikey = okey, ikey

    def _unindex(self, s: Session) -> None:
        if s.okey is not None:
            tbl = self.out_flows.get(s.proto)
            if tbl is not None and tbl.get(s.okey) is s:
                del tbl[s.okey]
        if s.ikey is not None:
            tbl = self.in_flows.get(s.proto)
            if tbl is not None and tbl.get(s.ikey) is s:
                del tbl[s.ikey]

    def set_timeout(self, s: Session, timeout: float, klass: str) -> None:
        """Change a session's timer; a shorter one is queued so expiry is on time."""
        s.timeout = timeout
        s.klass = klass
        if self.changed is not None:
            self.changed.add(s)
        exp = s.last + timeout
        if exp < s.hd:
            heapq.heappush(self._exact, (exp, s.id, s))
            self.on_deadline(exp)

    def remove(self, s: Session) -> None:
        if not s.alive:
            return
        s.alive = False
        self._n -= 1
        self._unindex(s)
        kind = (s.proto, s.kind)
        n = self.kinds.get(kind, 0) - 1
        if n > 0:
            self.kinds[kind] = n
        else:
            self.kinds.pop(kind, None)
        self.vpn.pop(s.id, None)
        s.o_hop = s.i_hop = None  # (a hop's filter state may list the session: no cycle left behind)
        for counts, key in ((self.count_src, s.origin), (self.count_private, s.in_addr)):
            n = counts.get(key, 0) - 1
            if n > 0:
                counts[key] = n
            else:
                counts.pop(key, None)
        if s.mapping is not None:
            self._drop_mapping_ref(s.mapping)
        if self.changed is not None:
            self.changed.add(s)
        if s.ur == UR_IN:
            self._ur_drop(s.in_addr)
        self.on_remove(s)

    def clear(self) -> int:
        sessions = self.all()
        for s in sessions:
            self.remove(s)
        return len(sessions)

    # ------------------------------------------------------------- expiry

    def next_deadline(self) -> float | None:
        """When ``expire`` next has work (the wheel's next second may be early: harmless)."""
        seconds, exact = self._seconds, self._exact
        while exact and not exact[0][2].alive:
            heapq.heappop(exact)
        if seconds:
            return min(seconds[0], exact[0][0]) if exact else seconds[0]
        return exact[0][0] if exact else None

    def expire(self, now: float) -> list[Session]:
        """Remove every session idle for its whole timeout; returns them."""
        gone: list[Session] = []
        seconds, wheel, exact = self._seconds, self._wheel, self._exact
        while seconds and seconds[0] <= now:
            sec = heapq.heappop(seconds)
            bucket = wheel.pop(sec)
            for s in bucket[1:]:
                if not s.alive or s.hd is not bucket[0]:  # type: ignore[attr-defined]
                    continue  # removed, or filed elsewhere since
                self._due(s, now, gone)  # type: ignore[arg-type]
        while exact and exact[0][0] <= now:
            t, _, s = heapq.heappop(exact)
            if not s.alive:
                continue
            if t == s.hd:  # its primary entry
                self._due(s, now, gone)
                continue
            exp = s.last + s.timeout  # a shortened timer's entry
            if exp <= now:
                self.remove(s)
                gone.append(s)
            elif exp < s.hd:
                heapq.heappush(exact, (exp, s.id, s))
        return gone

    def _due(self, s: Session, now: float, gone: list[Session]) -> None:
        exp = s.last + s.timeout
        if exp <= now:
            self.remove(s)
            gone.append(s)
        else:
            if self.changed is not None:
                self.changed.add(s)  # alive and used: the peer's copy gets the new idle time
            self._file(s, exp, now)
