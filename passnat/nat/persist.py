"""Sessions that survive a restart (R19, B2): the router's state as plain JSON-able data.

SEIL loses every NAT session when it restarts, so an idle VPN dies with it.
passnat's daemon saves ``export_state(now)`` when it stops and feeds it to
``import_state(state, now, elapsed)`` when it starts again.

Time: the engine reads no clock.  ``now`` is the caller's clock at export and
at import (they need not be the same clock); ``elapsed`` is how long the
router was down (the daemon measures it with the wall clock).  Each session
keeps its idle time plus the downtime: a session idle for 100 s of a 900 s
timer, restored after a 60 s restart, has 740 s left; one whose timer ran out
while the router was down is not restored.

What is restored: every session with its mapping (the same outside port), TCP
state and timer class, ESP SPI bindings and pairings, PPTP calls and their
GRE sessions, dynamic NAT bindings.  Fast-path flows are derived again from
the new configuration.  Sessions that the new configuration no longer allows
(their NAT interface or global address is gone) are skipped and counted.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from passnat.nat.session import Session

if TYPE_CHECKING:
    from passnat.nat.router import Router

VERSION = 1


def export_state(router: Router, now: float) -> dict[str, Any]:
    assert router.static is not None
    return {
        "version": VERSION,
        "now": now,
        "next_id": router.table.next_id_value(),
        "sessions": [s.to_dict() for s in router.table.all()],
        "dynamic": [[b.nat_if, b.private, b.global_, b.last] for b in router.static.bindings()],
    }


def import_state(router: Router, state: dict[str, Any], now: float, elapsed: float = 0.0) -> int:
    """Restore sessions saved by ``export_state``; returns how many were restored."""
    if state.get("version") != VERSION:
        raise ValueError(f"unsupported state version {state.get('version')!r}")
    shift = now - float(state["now"]) - max(0.0, elapsed)  # saved times -> this clock, downtime idle
    restored = 0
    # control connections before the GRE sessions of their calls
    saved = sorted(state["sessions"], key=lambda d: (d["handler"] == "pptp-gre", d["id"]))
    for d in saved:
        s = Session.from_dict(d)
        s.created += shift
        s.last += shift
        if s.last + s.timeout <= now or s.nat_if not in router.nat_ifaces:
            router.count("state_sessions_expired_or_invalid")
            continue
        handler = router.registry.by_name(s.handler)
        restore = getattr(handler, "restore", None)
        if restore is None or not restore(s):
            router.count("state_sessions_expired_or_invalid")
            continue
        restored += 1
    router.table.bump_id(int(state.get("next_id", 1)))
    assert router.static is not None
    for nat_if, private, global_, last in state.get("dynamic", []):
        router.static.restore(nat_if, int(private), int(global_), float(last) + shift, now)
    router.count("state_sessions_restored", restored)
    router.next_deadline()
    return restored
