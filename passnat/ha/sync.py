"""What the sync protocol carries, and how it is taken from and applied to the engine (sans-IO).

The state is what ``--state-file`` saves (passnat/nat/persist.py): every
session as its ``Session._SAVED`` fields (mapping, timers, TCP state, ESP
SPIs and pairings, PPTP calls with their GRE sessions) and every dynamic NAT
binding; and the filter's states (``state enable``: key, rule, the points it
passes, timers), which the state file does not keep.  A session record is the list of those fields in ``FIELDS``
order; times are the sender's clock, and each message carries the sender's
``now`` so the receiver shifts them onto its own.

Sender (the master): the engine notes *which* sessions changed in
``SessionTable.changed`` (a set add per change: made, removed, TCP state or
timer class changed, ESP SPI learned, PPTP call opened/changed/ended, and
each time the expiry wheel finds a live session with a newer idle time --
about once per timeout period for an active session, never per packet) and
``StaticNat.changed`` likewise for bindings.  ``take()`` empties them into
update messages: a live session goes as its record, a removed one as its id.
A change and a later one of the same session between two batches coalesce.
``snapshot()`` is the full transfer (bulk) after a (re)connection.

Receiver (every role; normally the backup): ``apply(kind, payload, now)``
validates a whole message field by field first (``SyncError``: nothing of it
is applied, R30), then removes, then creates or updates sessions: a known id
with the same endpoints is updated in place (TCP state, timer, idle time,
SPIs, calls); anything else is (re)made through the handler's ``restore``,
as after a restart.  A record that does not fit the running configuration
(interface, global address, port taken) is skipped and counted
(``ha_sync_conflicts``).  Idle times are the master's plus ``MARGIN``: the
backup never expires a session before the master does (the master's removal
arrives first); without a master it still does, ``MARGIN`` later.  Between
``bulk_begin`` and ``bulk_end`` the receiver notes which ids came; at
``bulk_end`` it removes every session the bulk did not name.
"""
from __future__ import annotations

import math
import operator
import re
import sys
from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from passnat.nat.handlers.common import restored_ur
from passnat.nat.session import Session

if TYPE_CHECKING:
    from passnat.nat.router import Router

#: the wire order of a session record (the state file's fields)
FIELDS: tuple[str, ...] = Session._SAVED
_record = operator.attrgetter(*FIELDS)
_F = {name: i for i, name in enumerate(FIELDS)}
#: seconds a backup's copy outlives the master's idle timer (the master's removal comes first)
MARGIN = 60.0
#: records per message
CHUNK = 1000
MAX_ID = 1 << 62
MAX_TIMEOUT = float(1 << 31)
_KINDS = frozenset(("napt", "snapt"))
_PPTP_STATES = frozenset(("opening", "established", "clearing"))
_CLASS = re.compile(r"[a-z][a-z0-9-]{0,31}\Z")
_HANDLER_PROTOCOLS: dict[str, frozenset[int] | None] = {
    "tcpudp": frozenset((6, 17)), "pptp": frozenset((6,)), "icmp": frozenset((1,)),
    "esp": frozenset((50,)), "pptp-gre": frozenset((47,)), "other": None,
}
_IDENTITY = ("proto", "kind", "nat_if", "in_addr", "in_port", "out_addr", "out_port", "rem_addr",
             "rem_port", "handler")


class SyncError(ValueError):
    """A message that is malformed: nothing of it was applied."""


# ---------------------------------------------------------------- validation


def _int(v: Any, lo: int, hi: int) -> bool:
    return type(v) is int and lo <= v <= hi


def _num(v: Any) -> bool:
    return type(v) in (int, float) and math.isfinite(v)


def _need(ok: bool, where: str, what: str, value: Any) -> None:
    if not ok:
        text = repr(value)
        raise SyncError(f"{where}: {what} (got {text[:60]}{'...' if len(text) > 60 else ''})")


def _list(v: Any, where: str) -> list[Any]:
    _need(type(v) is list, where, "not a list", v)
    return v  # type: ignore[no-any-return]


def _esp_info(info: Any, where: str) -> None:
    if info is None:
        return  # no SPI seen yet (its first packet is held for pairing)
    _need(type(info) is dict, where, "not an ESP record", info)
    for key in ("out_spis", "in_spis", "unpaired_in"):
        for i, v in enumerate(_list(info.get(key, []), f"{where}.{key}")):
            _need(_int(v, 0, 0xFFFFFFFF), f"{where}.{key}[{i}]", "not an SPI", v)
    for i, v in enumerate(_list(info.get("unpaired", []), f"{where}.unpaired")):
        _need(type(v) is list and len(v) == 2 and _int(v[0], 0, 0xFFFFFFFF) and _num(v[1]),
              f"{where}.unpaired[{i}]", "not [SPI, time]", v)
    for i, v in enumerate(_list(info.get("pairs", []), f"{where}.pairs")):
        _need(type(v) is list and len(v) == 2 and all(_int(x, 0, 0xFFFFFFFF) for x in v),
              f"{where}.pairs[{i}]", "not [outbound SPI, inbound SPI]", v)


def _call_ids(call: Any, where: str, n: int) -> None:
    _need(type(call) is list and len(call) == n, where, f"not a list of {n}", call)
    _need(_int(call[0], 0, 0xFFFF) and _int(call[1], 0, 0xFFFF)
          and (call[2] is None or _int(call[2], 0, 0xFFFF)), where, "not PPTP Call IDs", call)


def _pptp_info(info: Any, where: str) -> None:
    if info is None:
        return
    _need(type(info) is dict, where, "not a PPTP record", info)
    for i, call in enumerate(_list(info.get("pptp_calls", []), f"{where}.pptp_calls")):
        _call_ids(call, f"{where}.pptp_calls[{i}]", 4)
        _need(call[3] in _PPTP_STATES, f"{where}.pptp_calls[{i}][3]", "not a call state", call[3])


def _gre_info(info: Any, where: str) -> None:
    _need(type(info) is dict, where, "not a PPTP call record", info)
    call = info.get("call")
    _call_ids(call, f"{where}.call", 4)
    _need(_int(call[3], 1, MAX_ID), f"{where}.call[3]", "not a session id", call[3])


def _no_info(info: Any, where: str) -> None:
    _need(info is None or info == {}, where, "this handler keeps no protocol data", info)


_INFO = {"tcpudp": _no_info, "icmp": _no_info, "other": _no_info, "esp": _esp_info, "pptp": _pptp_info,
         "pptp-gre": _gre_info}


def validate_record(r: Any, where: str) -> None:
    """One session record, field by field (``SyncError`` names the first bad one)."""
    _need(type(r) is list and len(r) == len(FIELDS), where, f"not a list of {len(FIELDS)} fields", r)
    g = r.__getitem__
    _need(_int(g(_F["id"]), 1, MAX_ID), f"{where}.id", "not a session id", g(_F["id"]))
    _need(_int(g(_F["proto"]), 0, 255), f"{where}.proto", "not an IP protocol", g(_F["proto"]))
    _need(g(_F["kind"]) in _KINDS, f"{where}.kind", "not napt or snapt", g(_F["kind"]))
    _need(type(g(_F["nat_if"])) is str and 0 < len(g(_F["nat_if"])) <= 16, f"{where}.nat_if",
          "not an interface name", g(_F["nat_if"]))
    for f in ("in_addr", "out_addr", "rem_addr", "origin"):
        _need(_int(g(_F[f]), 0, 0xFFFFFFFF), f"{where}.{f}", "not an IPv4 address", g(_F[f]))
    for f in ("in_port", "out_port", "rem_port"):
        _need(_int(g(_F[f]), 0, 0xFFFF), f"{where}.{f}", "not a port or identifier", g(_F[f]))
    for f in ("created", "last"):
        _need(_num(g(_F[f])), f"{where}.{f}", "not a finite time", g(_F[f]))
    _need(_num(g(_F["timeout"])) and 0 < g(_F["timeout"]) <= MAX_TIMEOUT, f"{where}.timeout",
          "not a positive timer", g(_F["timeout"]))
    _need(type(g(_F["klass"])) is str and _CLASS.match(g(_F["klass"])) is not None, f"{where}.klass",
          "not a timer class", g(_F["klass"]))
    proto = g(_F["proto"])
    _need(_int(g(_F["tcp_state"]), 1, 4) if proto == 6 else g(_F["tcp_state"]) == 0, f"{where}.tcp_state",
          "not a TCP state", g(_F["tcp_state"]))
    _need(_int(g(_F["fins"]), 0, 3), f"{where}.fins", "not a FIN mask", g(_F["fins"]))
    handler = g(_F["handler"])
    _need(handler in _HANDLER_PROTOCOLS, f"{where}.handler", "not a handler", handler)
    protos = _HANDLER_PROTOCOLS[handler]
    _need(protos is None or proto in protos, f"{where}.proto", f"not a protocol of {handler}", proto)
    _INFO[handler](g(_F["info"]), f"{where}.info")


def validate(kind: str, obj: Any) -> None:
    """A whole decoded message (``SyncError`` on the first problem)."""
    _need(type(obj) is dict, kind, "not an object", obj)
    _need(_num(obj.get("now")), f"{kind}.now", "not a finite time", obj.get("now"))
    if kind == "bulk_begin":
        _need(_int(obj.get("next_id"), 1, MAX_ID), f"{kind}.next_id", "not a session id", obj.get("next_id"))
        return
    if kind != "update":
        return
    _need(_int(obj.get("next_id"), 1, MAX_ID), f"{kind}.next_id", "not a session id", obj.get("next_id"))
    for i, r in enumerate(_list(obj.get("s", []), "update.s")):
        validate_record(r, f"update.s[{i}]")
    for i, v in enumerate(_list(obj.get("r", []), "update.r")):
        _need(_int(v, 1, MAX_ID), f"update.r[{i}]", "not a session id", v)
    for i, v in enumerate(_list(obj.get("d", []), "update.d")):
        _need(type(v) is list and len(v) == 4 and type(v[0]) is str and len(v[0]) <= 16
              and _int(v[1], 0, 0xFFFFFFFF) and _int(v[2], 0, 0xFFFFFFFF) and _num(v[3]),
              f"update.d[{i}]", "not [interface, private, global, last]", v)
    for i, v in enumerate(_list(obj.get("dr", []), "update.dr")):
        _need(type(v) is list and len(v) == 2 and type(v[0]) is str and len(v[0]) <= 16
              and _int(v[1], 0, 0xFFFFFFFF), f"update.dr[{i}]", "not [interface, private]", v)
    for i, v in enumerate(_list(obj.get("f", []), "update.f")):
        validate_state(v, f"update.f[{i}]")
    for i, v in enumerate(_list(obj.get("fr", []), "update.fr")):
        _need(_state_key(v), f"update.fr[{i}]", "not a filter state key", v)


def _state_key(k: Any) -> bool:
    return (type(k) is list and len(k) == 5 and _int(k[0], 0, 255) and _int(k[1], 0, 0xFFFFFFFF)
            and _int(k[2], 0, 0xFFFF) and _int(k[3], 0, 0xFFFFFFFF) and _int(k[4], 0, 0xFFFF))


#: a filter state record: key, rule, origins, timer, fixed, ttl, klass, created, last, fins
STATE_FIELDS = ("key", "rule", "origins", "timer", "fixed", "ttl", "klass", "created", "last", "fins")


def validate_state(v: Any, where: str) -> None:
    _need(type(v) is list and len(v) == len(STATE_FIELDS), where, f"not a list of {len(STATE_FIELDS)} fields", v)
    key, rule, origins, timer, fixed, ttl, klass, created, last, fins = v
    _need(_state_key(key), f"{where}.key", "not a filter state key", key)
    _need(type(rule) is str and 0 < len(rule) <= 16, f"{where}.rule", "not a rule name", rule)
    _need(type(origins) is list and 0 < len(origins) <= 64
          and all(type(o) is list and len(o) == 2 and type(o[0]) is str and len(o[0]) <= 16 and type(o[1]) is bool
                  for o in origins), f"{where}.origins", "not a list of [interface, inbound]", origins)
    for name, x in (("timer", timer), ("ttl", ttl)):
        _need(_num(x) and 0 < x <= MAX_TIMEOUT, f"{where}.{name}", "not a positive timer", x)
    _need(type(fixed) is bool, f"{where}.fixed", "not a boolean", fixed)
    _need(type(klass) is str and _CLASS.match(klass) is not None, f"{where}.klass", "not a timer class", klass)
    for name, x in (("created", created), ("last", last)):
        _need(_num(x), f"{where}.{name}", "not a finite time", x)
    _need(_int(fins, 0, 3), f"{where}.fins", "not a FIN mask", fins)


def state_record(st: Any) -> list[Any]:
    return [list(st.key), st.rule, [list(o) for o in sorted(st.origins)], st.timer, st.fixed, st.ttl, st.klass,
            st.created, st.last, st.fins]


# ---------------------------------------------------------------- the engine side


class SyncState:
    """Changes out of and into one router (``counters``: the daemon's counter table)."""

    def __init__(self, router: Router, counters: Counter[str] | None = None):
        self.router = router
        self.counters: Counter[str] = counters if counters is not None else Counter()
        #: receiver: session id -> session (every session of the table while backup)
        self.index: dict[int, Session] = {}
        self._bulk_ids: set[int] | None = None
        self._bulk_dyn: set[tuple[str, int]] | None = None
        self._bulk_states: set[tuple[int, ...]] | None = None
        #: records refused by a clash with a session whose removal may come in the next message
        self._retry: list[tuple[list[Any], float]] = []
        self.applied_total = 0

    # ------------------------------------------------------------ sender

    @property
    def recording(self) -> bool:
        return self.router.table.changed is not None

    def record(self, on: bool) -> None:
        """Start (an empty set) or stop (None: no cost per change) noting changes."""
        assert self.router.static is not None
        states = self.router.filter.states
        if on:
            if self.router.table.changed is None:
                self.router.table.changed = set()
            if self.router.static.changed is None:
                self.router.static.changed = set()
            if states.changed is None:
                states.changed = set()
        else:
            self.router.table.changed = None
            self.router.static.changed = None
            states.changed = None

    def pending(self) -> int:
        """Changes noted and not yet taken."""
        assert self.router.static is not None
        return (len(self.router.table.changed or ()) + len(self.router.static.changed or ())
                + len(self.router.filter.states.changed or ()))

    def take(self, now: float, limit: int = CHUNK) -> dict[str, Any] | None:
        """One update message of at most ``limit`` noted changes, taken out of the change sets
        (None: nothing noted).  A live session goes as its record, an ended one as its id."""
        table, static = self.router.table, self.router.static
        assert static is not None
        changed, dyn, fst = table.changed, static.changed, self.router.filter.states.changed
        if not changed and not dyn and not fst:
            return None
        recs: list[Any] = []
        removed: list[int] = []
        if changed:
            pop = changed.pop
            for _ in range(min(limit, len(changed))):
                s = pop()
                if s.alive:
                    recs.append(_record(s))
                else:
                    removed.append(s.id)
        d, dr = [], []
        if dyn:
            for key in dyn:
                b = static.bind_out.get(key)
                if b is not None and b.alive:
                    d.append([b.nat_if, b.private, b.global_, b.last])
                else:
                    dr.append([key[0], key[1]])
            dyn.clear()
        f, fr = [], []
        if fst:
            states = self.router.filter.states
            pop = fst.pop
            for _ in range(limit):
                if not fst:
                    break  # (a newer state below may leave with its predecessor)
                st = pop()
                if st.alive:
                    f.append(state_record(st))
                else:
                    fr.append(list(st.key))
                    # a newer state with the same key goes in the same message, after the removal
                    # (the receiver applies removals first): its record may have gone in an earlier
                    # message, which this removal would otherwise undo on the backup
                    new = states.index.get(st.key)
                    if new is not None and new.key == st.key and new.alive:
                        fst.discard(new)
                        f.append(state_record(new))
        return {"now": now, "next_id": table.next_id_value(), "s": recs, "r": removed, "d": d, "dr": dr,
                "f": f, "fr": fr}

    def discard(self) -> None:
        """Forget the noted changes (a full transfer covers them)."""
        assert self.router.static is not None
        if self.router.table.changed:
            self.router.table.changed.clear()
        if self.router.static.changed:
            self.router.static.changed.clear()
        if self.router.filter.states.changed:
            self.router.filter.states.changed.clear()

    def snapshot(self) -> list[Session]:
        """Every live session, for a full transfer (control connections before their GRE)."""
        return sorted(self.router.table.all(), key=lambda s: s.handler == "pptp-gre")

    def bulk_messages(self, sessions: list[Session], now: float, chunk: int = CHUNK) -> Iterator[dict[str, Any]]:
        """The full transfer as update messages, each serialised when taken (a session that ended
        meanwhile is left out: its removal is a change of its own)."""
        assert self.router.static is not None
        next_id = self.router.table.next_id_value()
        dyn = [[b.nat_if, b.private, b.global_, b.last] for b in self.router.static.bindings()]
        states = [state_record(st) for st in list(self.router.filter.states.by_id.values()) if st.alive]
        yield {"now": now, "next_id": next_id, "s": [], "r": [], "d": dyn, "dr": [], "f": states, "fr": []}
        for i in range(0, len(sessions), chunk):
            yield {"now": now, "next_id": next_id, "s": [_record(s) for s in sessions[i:i + chunk] if s.alive],
                   "r": []}

    # ------------------------------------------------------------ receiver

    def abort_bulk(self) -> None:
        """The connection of a full transfer in progress ended: no sweep."""
        self._bulk_ids = self._bulk_dyn = self._bulk_states = None

    def rebuild_index(self) -> None:
        self.index = {s.id: s for s in self.router.table.all()}

    def apply(self, kind: str, obj: Any, now: float) -> int:
        """Apply one decoded message; the number of sessions it made or changed.

        ``SyncError`` when it is malformed (nothing applied; the caller counts and logs)."""
        validate(kind, obj)
        shift = now - float(obj["now"])
        if kind == "bulk_begin":
            self.rebuild_index()
            self._bulk_ids = set()
            self._bulk_dyn = set()
            self._bulk_states = set()
            self.router.table.bump_id(obj["next_id"])
            return 0
        if kind == "bulk_end":
            self._retry_conflicts(now, final=True)
            n = self._sweep() if self._bulk_ids is not None else 0
            self._bulk_ids = self._bulk_dyn = self._bulk_states = None
            return n
        if kind != "update":
            return 0
        table = self.router.table
        n = 0
        for sid in obj.get("r", ()):
            s = self.index.pop(sid, None)
            if s is not None and s.alive:
                table.remove(s)
                n += 1
        recs = obj.get("s", ())
        self._retry_conflicts(now, skip={r[_F["id"]] for r in recs})
        # control connections before the GRE sessions of their calls
        for r in sorted(recs, key=lambda r: r[_F["handler"]] == "pptp-gre"):
            if self._upsert(r, shift, now, first=True):
                n += 1
        self._dynamic(obj.get("d", ()), obj.get("dr", ()), shift, now)
        self._filter_states(obj.get("f", ()), obj.get("fr", ()), shift)
        table.bump_id(obj["next_id"])
        self.router.next_deadline()
        self.applied_total += n
        return n

    def _retry_conflicts(self, now: float, skip: set[int] = frozenset(), final: bool = False) -> None:  # type: ignore[assignment]
        retry, self._retry = self._retry, []
        for r, shift in retry:
            if r[_F["id"]] not in skip:
                self._upsert(r, shift, now, first=False)

    def _upsert(self, r: list[Any], shift: float, now: float, first: bool = True) -> bool:
        d = dict(zip(FIELDS, r))
        for f in ("kind", "nat_if", "klass", "handler"):
            d[f] = sys.intern(d[f])  # shared strings: no memory per session
        sid = d["id"]
        if self._bulk_ids is not None:
            self._bulk_ids.add(sid)
        last = float(d["last"]) + shift + MARGIN
        info = d["info"]
        if info and d["handler"] == "esp":
            info = dict(info)
            info["unpaired"] = [[spi, float(t) + shift] for spi, t in info.get("unpaired", [])]
            d["info"] = info
        s = self.index.get(sid)
        if s is not None and s.alive and all(getattr(s, f) == d[f] for f in _IDENTITY):
            self._update(s, d, last)
            return True
        if s is not None and s.alive:
            self.router.table.remove(s)
        s = Session.from_dict(d)
        s.created = float(d["created"]) + shift
        s.last = last
        s.timeout = float(s.timeout)
        router = self.router
        handler = router.registry.by_name(s.handler)
        restore = getattr(handler, "restore", None)
        if s.nat_if not in router.nat_ifaces or s.last + s.timeout <= now or restore is None:
            self.counters["ha_sync_conflicts"] += 1
            return False
        if not restore(s):
            if first and len(self._retry) < 4096:
                self._retry.append((r, shift))  # once more after the next message's removals
            else:
                self.counters["ha_sync_conflicts"] += 1
            return False
        self.index[sid] = s
        return True

    def _update(self, s: Session, d: dict[str, Any], last: float) -> None:
        router = self.router
        handler = router.registry.by_name(s.handler)
        s.tcp_state, s.fins = d["tcp_state"], d["fins"]
        if last > s.last:
            s.last = last
        timeout = float(d["timeout"])
        if timeout != s.timeout or d["klass"] != s.klass:
            router.table.set_timeout(s, timeout, d["klass"])
            if s.ur and not restored_ur(s):
                router.table.replied(s)  # answered on the master (its timer class says so): not evictable
            rebuild = getattr(handler, "rebuild", None)
            if rebuild is not None:
                rebuild(s)
        if d["info"] != s.info:
            update = getattr(handler, "update_info", None)
            if update is not None:
                update(s, d["info"])
            else:
                s.info = dict(d["info"]) if d["info"] else None

    def _dynamic(self, bound: Any, ended: Any, shift: float, now: float) -> None:
        static = self.router.static
        assert static is not None
        for nat_if, private in ended:
            static.remove(nat_if, private)
        for nat_if, private, global_, last in bound:
            if self._bulk_dyn is not None:
                self._bulk_dyn.add((nat_if, private))
            t = float(last) + shift + MARGIN
            b = static.bind_out.get((nat_if, private))
            if b is not None and b.alive and b.global_ == global_:
                b.last = max(b.last, t)
                continue
            if b is not None:
                static.remove(nat_if, private)
            if not static.restore(nat_if, private, global_, t, now):
                self.counters["ha_sync_conflicts"] += 1

    def _filter_states(self, made: Any, ended: Any, shift: float) -> None:
        flt = self.router.filter
        for key in ended:
            st = flt.states.index.get(tuple(key))
            if st is not None and st.key == tuple(key):
                flt.states.remove(st)
        for key, rule, origins, timer, fixed, ttl, klass, created, last, fins in made:
            k = tuple(key)
            if self._bulk_states is not None:
                self._bulk_states.add(k)
            st = flt.restore_state(k, sys.intern(rule), [(sys.intern(i), b) for i, b in origins], float(timer),
                                   fixed, float(ttl), sys.intern(klass), float(created) + shift,
                                   float(last) + shift + MARGIN, fins)
            if st is None:
                self.counters["ha_sync_conflicts"] += 1

    def _sweep(self) -> int:
        """After a full transfer: remove what it did not name."""
        assert self._bulk_ids is not None and self._bulk_dyn is not None and self.router.static is not None
        seen = self._bulk_ids
        gone = [s for s in self.router.table.all() if s.id not in seen]
        for s in sorted(gone, key=lambda s: s.handler != "pptp-gre"):  # GRE sessions first
            if s.alive:
                self.router.table.remove(s)
        for b in self.router.static.bindings():
            if (b.nat_if, b.private) not in self._bulk_dyn:
                self.router.static.remove(b.nat_if, b.private)
        states = self.router.filter.states
        for st in list(states.by_id.values()):
            if self._bulk_states is not None and st.key not in self._bulk_states:
                states.remove(st)
        self.rebuild_index()
        return len(gone)

    def restart_timers(self, now: float) -> None:
        """On takeover: every session's idle time starts afresh (never shortened)."""
        for s in self.router.table.all():
            if s.last < now:
                s.last = now
        assert self.router.static is not None
        for b in self.router.static.bindings():
            if b.last < now:
                b.last = now
        for st in self.router.filter.states.by_id.values():
            if st.last < now:
                st.last = now
