"""The session table: the only way sessions are created, found, refreshed and removed.

(libalias alias_db.c: "Data is accessed by function calls".)

Indexes:
  * ``out_flows[proto]`` / ``in_flows[proto]``: 12-byte keys exactly as the
    wire carries them (src, dst, sport, dport at IPv4 bytes 12-23) -> flow
    tuple.  TCP and UDP use them on the fast path; ICMP echo uses the same
    shape with (id, 0) as ports.
  * the expiry heap holds every live session once; ``all()`` and ``get()``
    read it (show / clear are rare, so no id index costs memory per session).
  * ``mappings``: endpoint-independent mappings, and one ``IdPool`` of
    outside ports per (protocol, global address).

Expiry is lazy: a refresh only stores ``last``.  The main heap holds the
sessions themselves, ordered by ``Session.hd`` (which never changes while a
session is in it), and re-files a session popped before its time; a session
whose timer was *shortened* (TCP closing, answered ICMP) also gets a
(deadline, id) entry in a second, small heap so it still expires on time.  Limits
(R18): a global maximum, ``restricted-per-ip`` (sessions created by packets
from one source address, either side) and ``restricted-per-private-ip``
(sessions involving one private address).  Reaching one drops the packet; the
router counts and logs "nat session is full".
"""
from __future__ import annotations

import heapq
import random
import struct
from collections.abc import Callable

from passnat.nat.drops import Drop
from passnat.nat.flow import Flow
from passnat.nat.ports import IdPool
from passnat.nat.session import Mapping, Session

KEY = struct.Struct("!IIHH")


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
        self.out_flows: dict[int, dict[bytes, Flow]] = {6: {}, 17: {}, 1: {}}
        self.in_flows: dict[int, dict[bytes, Flow]] = {6: {}, 17: {}, 1: {}}
        self.mappings: dict[tuple[int, str, int, int], Mapping] = {}
        self.pools: dict[tuple[int, int], IdPool] = {}
        self.reserved: dict[tuple[int, int], frozenset[int]] = {}
        self.count_src: dict[int, int] = {}
        self.count_private: dict[int, int] = {}
        self._heap: list[Session] = []
        self._short: list[tuple[float, int, Session]] = []
        self._next_id = 1
        self.on_remove: Callable[[Session], None] = lambda s: None
        self.on_deadline: Callable[[float], None] = lambda t: None  # the router's wake()
        self.created_total = 0

    def __len__(self) -> int:
        return self._n

    def all(self) -> list[Session]:
        """Every live session, oldest first."""
        return sorted((s for s in self._heap if s.alive), key=lambda s: s.id)

    def get(self, session_id: int) -> Session | None:
        for s in self._heap:
            if s.id == session_id and s.alive:
                return s
        return None

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
        pool = self.pool(proto, out_addr)
        m = Mapping(proto, nat_if, in_addr, in_port, out_addr, 0)
        port = pool.take(in_port, lo, hi, m, keep_if_free=keep)
        if port is None:
            return None
        m.out_port = port
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

    def add(self, s: Session) -> None:
        self._n += 1
        self.count_src[s.origin] = self.count_src.get(s.origin, 0) + 1
        self.count_private[s.in_addr] = self.count_private.get(s.in_addr, 0) + 1
        if s.mapping is not None:
            s.mapping.refs += 1
        s.hd = s.last + s.timeout
        heapq.heappush(self._heap, s)
        self.created_total += 1
        self.on_deadline(s.hd)

    def set_flows(self, s: Session, okey: bytes | None, oflow: Flow | None,
                  ikey: bytes | None, iflow: Flow | None) -> None:
        """Install (or replace) the session's fast-path flows under its keys."""
        proto = s.proto
        if okey is not None and oflow is not None:
            self.out_flows[proto][okey] = oflow
        if ikey is not None and iflow is not None:
            self.in_flows[proto][ikey] = iflow
        s.okey, s.oflow, s.ikey, s.iflow = okey, oflow, ikey, iflow

    def set_timeout(self, s: Session, timeout: float, klass: str) -> None:
        """Change a session's timer; a shorter one is queued so expiry is on time."""
        s.timeout = timeout
        s.klass = klass
        exp = s.last + timeout
        if exp < s.hd:
            heapq.heappush(self._short, (exp, s.id, s))
            self.on_deadline(exp)

    def remove(self, s: Session) -> None:
        if not s.alive:
            return
        s.alive = False
        self._n -= 1
        if s.okey is not None:
            tbl = self.out_flows.get(s.proto)
            if tbl is not None and tbl.get(s.okey) is s.oflow:
                del tbl[s.okey]
        if s.ikey is not None:
            tbl = self.in_flows.get(s.proto)
            if tbl is not None and tbl.get(s.ikey) is s.iflow:
                del tbl[s.ikey]
        for counts, key in ((self.count_src, s.origin), (self.count_private, s.in_addr)):
            n = counts.get(key, 0) - 1
            if n > 0:
                counts[key] = n
            else:
                counts.pop(key, None)
        if s.mapping is not None:
            self._drop_mapping_ref(s.mapping)
        self.on_remove(s)

    def clear(self) -> int:
        sessions = self.all()
        for s in sessions:
            self.remove(s)
        return len(sessions)

    # ------------------------------------------------------------- expiry

    def next_deadline(self) -> float | None:
        heap, short = self._heap, self._short
        while heap and not heap[0].alive:
            heapq.heappop(heap)
        while short and not short[0][2].alive:
            heapq.heappop(short)
        candidates = ([heap[0].hd] if heap else []) + ([short[0][0]] if short else [])
        return min(candidates) if candidates else None

    def expire(self, now: float) -> list[Session]:
        """Remove every session idle for its whole timeout; returns them."""
        heap, short = self._heap, self._short
        gone: list[Session] = []
        while heap and heap[0].hd <= now:
            s = heapq.heappop(heap)
            if not s.alive:
                continue
            exp = s.last + s.timeout
            if exp <= now:
                self.remove(s)
                gone.append(s)
            else:
                s.hd = exp
                heapq.heappush(heap, s)
        while short and short[0][0] <= now:
            _, sid, s = heapq.heappop(short)
            if not s.alive:
                continue
            exp = s.last + s.timeout
            if exp <= now:
                self.remove(s)
                gone.append(s)
            elif exp < s.hd:
                heapq.heappush(short, (exp, sid, s))
        return gone
