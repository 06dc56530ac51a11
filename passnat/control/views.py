"""What the operator's commands show, as plain JSON-able data built from the router's state.

The daemon answers each control request with one of these (``format`` turns
them into text on the command's side).  They only read the engine's public
API (``sessions``, ``counters``, ``config``, ``filter_status``) and the link
layer's counters, so they are tested with a ``Router`` and fake links,
without a daemon.

Invariant: every function returns JSON-serialisable values only and never
modifies the router, except ``clear_nat``.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from passnat.control.protocol import ProtocolError
from passnat.io.linkdrops import EVENTS as LINK_EVENTS
from passnat.io.linkdrops import EXPLAIN as LINK_EXPLAIN
from passnat.io.linkdrops import LinkDrop
from passnat.nat.drops import EXPLAIN, Drop
from passnat.nat.router import Router


class LinkView(Protocol):
    name: str

    def stats(self) -> dict[str, Any]: ...


def status_nat(router: Router, now: float) -> list[dict[str, Any]]:
    """Every session record (``Router.sessions``), ordered by id (bindings last)."""
    recs = router.sessions(now)
    return sorted(recs, key=lambda r: (r.get("id") is None, r.get("id") or 0, str(r.get("inside"))))


def clear_nat(router: Router, session_id: int | None) -> dict[str, Any]:
    n = router.clear_sessions(session_id)
    if session_id is not None and n == 0:
        raise ProtocolError(f"no NAT session with id {session_id}")
    return {"cleared": n}


def config_text(router: Router) -> str:
    from passnat.config import render

    return render(router.config)


def doctor(router: Router, now: float) -> list[dict[str, Any]]:
    """``passnat doctor``: the engine's VPN passthrough findings (docs/doctor.md)."""
    return [f.as_dict() for f in router.diagnose(now)]


def metrics(router: Router, links: Iterable[LinkView], daemon: Mapping[str, int]) -> str:
    """Prometheus text exposition: the engine's metrics plus per-interface packets, bytes, drops."""
    from passnat.nat import metrics as engine_metrics

    packets, octets, drops = [], [], []
    for link in links:
        st = link.stats()
        for direction in ("rx", "tx"):
            labels = {"interface": link.name, "direction": direction}
            packets.append(("passnat_interface_packets_total", labels, float(st.get(f"{direction}_packets", 0))))
            octets.append(("passnat_interface_bytes_total", labels, float(st.get(f"{direction}_bytes", 0))))
        drops.append(("passnat_interface_ring_drops_total", {"interface": link.name}, float(st.get("ring_drops", 0))))
    extra = [
        ("passnat_interface_packets_total", "counter", "Frames received (rx) and sent (tx) per interface.", packets),
        ("passnat_interface_bytes_total", "counter", "Bytes received (rx) and sent (tx) per interface.", octets),
        ("passnat_interface_ring_drops_total", "counter", "Frames the kernel dropped at a full receive ring.", drops),
        ("passnat_daemon_events_total", "counter", "Daemon events (ARP, link layer).",
         [("passnat_daemon_events_total", {"event": k}, float(v)) for k, v in sorted(daemon.items())]),
    ]
    return engine_metrics.render(router, extra)


# ---------------------------------------------------------------- filter


def status_filter(router: Router, now: float) -> dict[str, Any]:
    """Filter rules with their counters, the default action and the dynamic states
    (the engine's ``filter_status``; passnat/filter/status.py documents the records)."""
    return router.filter_status(now)


# ---------------------------------------------------------------- counters


def counters(router: Router, links: Iterable[LinkView], daemon: Mapping[str, int],
             uptime: float | None = None) -> dict[str, Any]:
    """Every drop reason (engine and link layer) with its count and explanation, event
    counters, and per-interface packets/bytes in and out with the ring's drops."""
    engine = router.counters()
    drop_names = {d.value for d in Drop}
    engine_drops = [{"name": d.value, "count": int(engine.get(d.value, 0)), "explain": EXPLAIN.get(d, "")}
                    for d in Drop]
    engine_events = {k: v for k, v in sorted(engine.items()) if k not in drop_names}
    interfaces: dict[str, Any] = {}
    link_totals: dict[str, int] = dict(daemon)
    for link in links:
        st = link.stats()
        interfaces[link.name] = {k: v for k, v in st.items() if k != "counters"}
        interfaces[link.name]["drops"] = {k: v for k, v in st.get("counters", {}).items()
                                          if k in {d.value for d in LinkDrop}}
        for k, v in st.get("counters", {}).items():
            link_totals[k] = link_totals.get(k, 0) + v
        link_totals[LinkDrop.RING_FULL.value] = (link_totals.get(LinkDrop.RING_FULL.value, 0)
                                                 + int(st.get("ring_drops", 0)))
    link_drops = [{"name": d.value, "count": int(link_totals.get(d.value, 0)), "explain": LINK_EXPLAIN[d]}
                  for d in LinkDrop]
    link_events = {k: int(link_totals.get(k, 0)) for k in LINK_EVENTS}
    out: dict[str, Any] = {"engine": {"drops": engine_drops, "events": engine_events},
                           "link": {"drops": link_drops, "events": link_events},
                           "interfaces": interfaces}
    if uptime is not None:
        out["uptime"] = round(uptime, 1)
    from passnat import speedups
    out["dataplane"] = {"mode": speedups.mode(), "reason": speedups.reason()}
    return out


def arp(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(records, key=lambda r: (r["interface"], tuple(int(x) for x in r["address"].split("."))))
