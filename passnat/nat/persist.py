"""Sessions that survive a restart (R19, B2): the router's state as plain JSON-able data.

SEIL loses every NAT session when it restarts, so an idle VPN dies with it.
passnat's daemon saves ``export_state(now)`` (periodically, on SIGHUP and when
it stops) and feeds it to ``import_state(state, now, elapsed)`` when it starts
again.

Time: the engine reads no clock.  ``now`` is the caller's clock at export and
at import (they need not be the same clock); ``elapsed`` is how long the
router was down (the daemon measures it with the wall clock).  Each session
keeps its idle time plus the downtime: a session idle for 100 s of a 900 s
timer, restored after a 60 s restart, has 740 s left; one whose timer ran out
while the router was down is not restored.

What is restored: every session with its mapping (the same outside port), TCP
state and timer class, ESP SPI bindings and pairings, PPTP calls and their
GRE sessions, dynamic NAT bindings.  Fast-path flows are derived again from
the new configuration.

Validation (issue 13 §4): the import is all-or-nothing.  Every field of every
record is checked *before* anything reaches the engine -- types (a bool is
not a number), ranges (addresses 32-bit, ports and Call IDs 16-bit, SPIs
32-bit, protocol 0-255, TCP state, timer class, a positive finite timer),
finite times no later than the save, unique ids and flows, the handler and
its protocol, the protocol-specific ``info`` of ESP and PPTP.  The first
problem raises ``StateError`` naming the record and field, and nothing is
imported.  Should a restore still fail, every session restored so far is
removed again.  Records that are well-formed but no longer fit the running
configuration -- their NAT interface or global address is gone, the inside
address is neither in a ``nat napt`` private range nor a SNAPT target of that
interface, their timer ran out, their port is taken or now reserved -- are
skipped and counted (``state_sessions_expired_or_invalid``), as after a
reload.
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from passnat.nat.session import Session

if TYPE_CHECKING:
    from passnat.nat.router import Router

VERSION = 1

#: how far a saved time may lie after the save's own ``now`` (seconds): rounding only
CLOCK_SLACK = 1.0
MAX_TIMEOUT = float(1 << 31)  # seconds; a timer is at most ~68 years
MAX_ID = 1 << 62

_PPTP_STATES = frozenset(("opening", "established", "clearing"))
_KINDS = frozenset(("napt", "snapt"))
#: the protocols each built-in handler's sessions carry (other handlers: any protocol)
_HANDLER_PROTOCOLS: dict[str, frozenset[int]] = {
    "tcpudp": frozenset((6, 17)),
    "pptp": frozenset((6,)),
    "icmp": frozenset((1,)),
    "esp": frozenset((50,)),
    "pptp-gre": frozenset((47,)),
}
_PORTED = frozenset(("tcpudp", "pptp", "icmp"))  # flows keyed by ports (or the ICMP id)
_CLASS_NAME = re.compile(r"[a-z][a-z0-9-]{0,31}\Z")


class StateError(ValueError):
    """The saved state is malformed; nothing of it was imported."""


def export_state(router: Router, now: float) -> dict[str, Any]:
    assert router.static is not None
    return {
        "version": VERSION,
        "now": now,
        "next_id": router.table.next_id_value(),
        "sessions": [s.to_dict() for s in router.table.all()],
        "dynamic": [[b.nat_if, b.private, b.global_, b.last] for b in router.static.bindings()],
    }


def import_state(router: Router, state: Any, now: float, elapsed: float = 0.0) -> int:
    """Restore sessions saved by ``export_state``; returns how many were restored.

    Raises ``StateError`` (nothing imported) when ``state`` is malformed."""
    if not _finite(now) or not _finite(elapsed):
        raise ValueError("import_state: now and elapsed must be finite numbers")
    saved, dynamic, next_id, saved_now = validate(router, state)
    shift = now - saved_now - max(0.0, elapsed)  # saved times -> this clock, downtime idle
    before = {id(s) for s in router.table.all()}
    assert router.static is not None
    had_bindings = bool(router.static.bindings())
    restored: list[Session] = []
    skipped = 0
    try:
        # control connections before the GRE sessions of their calls
        for d in sorted(saved, key=lambda d: (d["handler"] == "pptp-gre", d["id"])):
            s = Session.from_dict(d)
            s.created = float(s.created) + shift
            s.last = float(s.last) + shift
            s.timeout = float(s.timeout)
            if s.last + s.timeout <= now or not fits(router, s):
                skipped += 1
                continue
            handler = router.registry.by_name(s.handler)
            restore = getattr(handler, "restore", None)
            if restore is None or not restore(s):
                skipped += 1
                continue
            restored.append(s)
        router.table.bump_id(next_id)
        for nat_if, private, global_, last in dynamic:
            router.static.restore(nat_if, private, global_, float(last) + shift, now)
    except Exception as e:
        for s in reversed(router.table.all()):  # every session this import added, half-restored ones too
            if id(s) not in before:
                router.table.remove(s)
        if not had_bindings:
            router.static.clear()
        raise StateError(f"restoring the saved sessions failed ({type(e).__name__}: {e}); "
                         "nothing was imported") from e
    if skipped:
        router.count("state_sessions_expired_or_invalid", skipped)
    router.count("state_sessions_restored", len(restored))
    router.next_deadline()
    return len(restored)


def fits(router: Router, s: Session) -> bool:
    """Whether a well-formed saved session still fits the running configuration."""
    if s.nat_if not in router.nat_ifaces or router.globals.get(s.nat_if) != s.out_addr:
        return False
    if router.is_napt_private(s.nat_if, s.in_addr):
        return True
    return any(int(r.forward) == s.in_addr for r in router.snapt.rules.get(s.nat_if, ()))


# ------------------------------------------------------------------ validation


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _int(v: Any, lo: int, hi: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def _fail(where: Any, what: str, value: Any) -> StateError:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return StateError(f"{where}: {what} (got {text})")


def _need(ok: bool, where: Any, what: str, value: Any) -> None:
    if not ok:
        raise _fail(where, what, value)


def _addr(where: Any, v: Any) -> None:
    _need(_int(v, 0, 0xFFFFFFFF), where, "not an IPv4 address (an integer 0-4294967295)", v)


def _port(where: Any, v: Any) -> None:
    _need(_int(v, 0, 0xFFFF), where, "not a port or identifier (0-65535)", v)


def _time(where: Any, v: Any, saved_now: float) -> None:
    _need(_finite(v), where, "not a finite time", v)
    _need(v <= saved_now + CLOCK_SLACK, where, f"later than the save itself ({saved_now})", v)


def _list(where: str, v: Any) -> list[Any]:
    _need(isinstance(v, list), where, "not a list", v)
    return list(v)


def _esp_info(where: Any, info: Any, saved_now: float) -> None:
    _need(isinstance(info, dict), where, "not an ESP record", info)
    spi = (0, 0xFFFFFFFF)
    for key in ("out_spis", "in_spis", "unpaired_in"):
        if key == "unpaired_in" and key not in info:
            continue
        for i, v in enumerate(_list(f"{where}.{key}", info.get(key))):
            _need(_int(v, *spi), f"{where}.{key}[{i}]", "not an SPI (0-4294967295)", v)
    for i, v in enumerate(_list(f"{where}.unpaired", info.get("unpaired"))):
        _need(isinstance(v, list) and len(v) == 2 and _int(v[0], *spi), f"{where}.unpaired[{i}]",
              "not [SPI, time]", v)
        _time(f"{where}.unpaired[{i}][1]", v[1], saved_now)
    for i, v in enumerate(_list(f"{where}.pairs", info.get("pairs"))):
        _need(isinstance(v, list) and len(v) == 2 and _int(v[0], *spi) and _int(v[1], *spi),
              f"{where}.pairs[{i}]", "not [outbound SPI, inbound SPI]", v)


def _call_id(where: Any, v: Any, *, optional: bool = False) -> None:
    _need((optional and v is None) or _int(v, 0, 0xFFFF), where, "not a PPTP Call ID (0-65535)", v)


def _pptp_info(where: Any, info: Any, saved_now: float) -> None:
    if info is None:
        return
    _need(isinstance(info, dict), where, "not a PPTP record", info)
    for i, call in enumerate(_list(f"{where}.pptp_calls", info.get("pptp_calls", []))):
        w = f"{where}.pptp_calls[{i}]"
        _need(isinstance(call, list) and len(call) == 4, w, "not [inside, outside, peer, state]", call)
        _call_id(f"{w}[0]", call[0])
        _call_id(f"{w}[1]", call[1])
        _call_id(f"{w}[2]", call[2], optional=True)
        _need(isinstance(call[3], str) and call[3] in _PPTP_STATES, f"{w}[3]", "not a call state", call[3])


def _gre_info(where: Any, info: Any, saved_now: float) -> None:
    _need(isinstance(info, dict), where, "not a PPTP call record", info)
    call = info.get("call")
    _need(isinstance(call, list) and len(call) == 4, f"{where}.call", "not [inside, outside, peer, control id]",
          call)
    _call_id(f"{where}.call[0]", call[0])
    _call_id(f"{where}.call[1]", call[1])
    _call_id(f"{where}.call[2]", call[2], optional=True)
    _need(_int(call[3], 1, MAX_ID), f"{where}.call[3]", "not a session id", call[3])


def _no_info(where: Any, info: Any, saved_now: float) -> None:
    _need(info is None or info == {}, where, "this handler keeps no protocol data", info)


_INFO: dict[str, Callable[[Any, Any, float], None]] = {
    "tcpudp": _no_info, "icmp": _no_info, "other": _no_info,
    "esp": _esp_info, "pptp": _pptp_info, "pptp-gre": _gre_info,
}


def _session(router: Router, where: str, d: Any, saved_now: float) -> None:
    _need(isinstance(d, dict), where, "not a session record", d)
    if not d.keys() >= _SAVED_SET:
        missing = [k for k in _SAVED if k not in d]
        raise _fail(where, f"missing field(s) {', '.join(missing)}", sorted(map(str, d))[:8])
    if _plain_fields_ok(d, saved_now):  # the usual case, checked in one go
        fields = _RICH
    else:  # field by field, for the message
        fields = _FIELDS
    for key, check in fields.items():
        check(router, _Loc(where, key), d[key], d, saved_now)


_ADDR_MAX = 0xFFFFFFFF


def _plain_fields_ok(d: dict[str, Any], saved_now: float) -> bool:
    """The scalar fields that ``_FIELDS`` checks one by one, all at once and at least as strictly
    (``type(x) is int`` excludes bool); False sends the record through the one-by-one checks."""
    fin, t_int, t_float, limit = math.isfinite, int, float, saved_now + CLOCK_SLACK
    try:
        i, proto, created, last, timeout = d["id"], d["proto"], d["created"], d["last"], d["timeout"]
        return (type(i) is t_int and 1 <= i <= MAX_ID and type(proto) is t_int and 0 <= proto <= 255
                and d["kind"] in _KINDS and type(d["nat_if"]) is str and 0 < len(d["nat_if"]) <= 64
                and type(a1 := d["in_addr"]) is t_int and 0 <= a1 <= _ADDR_MAX
                and type(a2 := d["out_addr"]) is t_int and 0 <= a2 <= _ADDR_MAX
                and type(a3 := d["rem_addr"]) is t_int and 0 <= a3 <= _ADDR_MAX
                and type(a4 := d["origin"]) is t_int and 0 <= a4 <= _ADDR_MAX
                and type(p1 := d["in_port"]) is t_int and 0 <= p1 <= 0xFFFF
                and type(p2 := d["out_port"]) is t_int and 0 <= p2 <= 0xFFFF
                and type(p3 := d["rem_port"]) is t_int and 0 <= p3 <= 0xFFFF
                and type(created) in (t_int, t_float) and fin(created) and created <= limit
                and type(last) in (t_int, t_float) and fin(last) and last <= limit
                and type(timeout) in (t_int, t_float) and fin(timeout) and 0 < timeout <= MAX_TIMEOUT
                and type(d["tcp_state"]) is t_int and (1 <= d["tcp_state"] <= 4 if proto == 6 else d["tcp_state"] == 0)
                and type(d["fins"]) is t_int and 0 <= d["fins"] <= 3)
    except TypeError:  # an unhashable kind, a non-number compared: the slow checks say which
        return False


class _Loc:
    """``where.key``, formatted only for an error message (validation runs per field)."""

    __slots__ = ("key", "where")

    def __init__(self, where: str, key: str):
        self.where = where
        self.key = key

    def __str__(self) -> str:
        return f"{self.where}.{self.key}"

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)


def _f_id(router: Router, w: Any, v: Any, d: dict[str, Any], now: float) -> None:
    _need(_int(v, 1, MAX_ID), w, "not a session id (a positive integer)", v)


def _f_proto(router: Router, w: Any, v: Any, d: dict[str, Any], now: float) -> None:
    _need(_int(v, 0, 255), w, "not an IP protocol number (0-255)", v)


def _f_kind(router: Router, w: Any, v: Any, d: dict[str, Any], now: float) -> None:
    _need(isinstance(v, str) and v in _KINDS, w, f"not a session type ({', '.join(sorted(_KINDS))})", v)


def _f_nat_if(router: Router, w: Any, v: Any, d: dict[str, Any], now: float) -> None:
    _need(isinstance(v, str) and 0 < len(v) <= 64, w, "not an interface name", v)


def _f_addr(router: Router, w: Any, v: Any, d: dict[str, Any], now: float) -> None:
    _addr(w, v)


def _f_port(router: Router, w: Any, v: Any, d: dict[str, Any], now: float) -> None:
    _port(w, v)


def _f_time(router: Router, w: Any, v: Any, d: dict[str, Any], now: float) -> None:
    _time(w, v, now)


def _f_timeout(router: Router, w: Any, v: Any, d: dict[str, Any], now: float) -> None:
    _need(_finite(v) and 0 < v <= MAX_TIMEOUT, w, f"not a timer (finite, 0 < seconds <= {MAX_TIMEOUT:.0f})", v)


def _f_klass(router: Router, w: Any, v: Any, d: dict[str, Any], now: float) -> None:
    ok = isinstance(v, str) and bool(_CLASS_NAME.match(v))
    if ok:
        try:
            ok = _finite(router.timeout(v))
        except Exception:  # noqa: BLE001 -- an unknown class is what we are checking for
            ok = False
    _need(ok, w, "not a timer class", v)


def _f_tcp_state(router: Router, w: Any, v: Any, d: dict[str, Any], now: float) -> None:
    if d.get("proto") == 6:
        _need(_int(v, 1, 4), w, "not a TCP state (1-4)", v)
    else:
        _need(_int(v, 0, 0), w, "a TCP state on a non-TCP session", v)


def _f_fins(router: Router, w: Any, v: Any, d: dict[str, Any], now: float) -> None:
    _need(_int(v, 0, 3), w, "not a FIN mask (0-3)", v)


def _f_handler(router: Router, w: Any, v: Any, d: dict[str, Any], now: float) -> None:
    _need(isinstance(v, str) and router.registry.by_name(v) is not None, w, "not a protocol handler", v)
    allowed = _HANDLER_PROTOCOLS.get(v)
    if allowed is not None:
        _need(d["proto"] in allowed, w, f"handler {v} does not handle protocol {d['proto']}", v)
    elif v == "other":
        _need(d["proto"] not in (1, 6, 17), w, f"handler {v} does not handle protocol {d['proto']}", v)


def _f_info(router: Router, w: Any, v: Any, d: dict[str, Any], now: float) -> None:
    check = _INFO.get(d["handler"])
    _need(check is not None or v is None or isinstance(v, dict), w, "not a protocol record", v)
    if check is not None:
        check(w, v, now)


_FIELDS: dict[str, Callable[[Router, Any, Any, dict[str, Any], float], None]] = {
    "id": _f_id, "proto": _f_proto, "kind": _f_kind, "nat_if": _f_nat_if,
    "in_addr": _f_addr, "in_port": _f_port, "out_addr": _f_addr, "out_port": _f_port,
    "rem_addr": _f_addr, "rem_port": _f_port, "created": _f_time, "last": _f_time,
    "timeout": _f_timeout, "klass": _f_klass, "tcp_state": _f_tcp_state, "fins": _f_fins,
    "origin": _f_addr, "handler": _f_handler, "info": _f_info,
}
#: the checks ``_plain_fields_ok`` does not cover
_RICH = {k: _FIELDS[k] for k in ("klass", "handler", "info")}
#: every field Session saves; each must have its check above (tests/nat/test_persist.py says so)
_SAVED: tuple[str, ...] = Session._SAVED
_SAVED_SET = frozenset(_SAVED)


def validate(router: Router, state: Any) -> tuple[list[dict[str, Any]], list[tuple[str, int, int, float]], int, float]:
    """Check every record of a saved state; (sessions, dynamic bindings, next id, saved now).

    Raises ``StateError`` naming the first problem."""
    _need(isinstance(state, dict), "state", "not an object", state)
    _need(state.get("version") == VERSION, "state.version", f"unsupported version (this passnat reads {VERSION})",
          state.get("version"))
    saved_now = state.get("now")
    _need(_finite(saved_now), "state.now", "not a finite time", saved_now)
    next_id = state.get("next_id", 1)
    _need(_int(next_id, 1, MAX_ID), "state.next_id", "not a session id", next_id)
    sessions = _list("state.sessions", state.get("sessions"))
    ids: set[int] = set()
    keys: set[tuple[Any, ...]] = set()
    for i, d in enumerate(sessions):
        where = f"state.sessions[{i}]"
        _session(router, where, d, float(saved_now))
        _need(d["id"] not in ids, f"{where}.id", "a second session with this id", d["id"])
        ids.add(d["id"])
        if d["handler"] in _PORTED:
            key: tuple[Any, ...] = (d["proto"], d["nat_if"], d["in_addr"], d["in_port"], d["rem_addr"],
                                    d["rem_port"] if d["proto"] != 1 else 0)
        elif d["handler"] == "pptp-gre":
            key = ("gre", d["nat_if"], d["in_addr"], d["in_port"], d["rem_addr"], d["info"]["call"][3])
        else:
            key = (d["proto"], d["nat_if"], d["in_addr"], d["rem_addr"])
        _need(key not in keys, where, "a second session for the same flow", key)
        keys.add(key)
    dynamic = []
    for i, b in enumerate(_list("state.dynamic", state.get("dynamic", []))):
        where = f"state.dynamic[{i}]"
        _need(isinstance(b, list) and len(b) == 4, where, "not [interface, private, global, last]", b)
        _need(isinstance(b[0], str) and 0 < len(b[0]) <= 64, f"{where}[0]", "not an interface name", b[0])
        _addr(f"{where}[1]", b[1])
        _addr(f"{where}[2]", b[2])
        _time(f"{where}[3]", b[3], float(saved_now))
        dynamic.append((b[0], b[1], b[2], float(b[3])))
    return sessions, dynamic, next_id, float(saved_now)
