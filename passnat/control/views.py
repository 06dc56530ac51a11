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

    return render(router.config, secrets=False)  # the HA key stays in the file


def doctor(router: Router, now: float) -> list[dict[str, Any]]:
    """``passnat doctor``: the engine's VPN passthrough findings (docs/doctor.md)."""
    return [f.as_dict() for f in router.diagnose(now)]


def metrics(router: Router, links: Iterable[LinkView], daemon: Mapping[str, int], now: float | None = None,
            uptime: float | None = None) -> str:
    """Prometheus text exposition: the engine's metrics, the VPN view as gauges, per-interface
    packets, bytes and drops, link-layer drops, the data plane and build info (docs/operations.md)."""
    from passnat.nat import metrics as engine_metrics

    sessions = router.table.vpn_sessions()  # the VPN view's only: a scrape never walks the whole table
    packets, octets, ring, if_drops = [], [], [], []
    link_totals: dict[str, int] = {}
    link_reasons = {d.value for d in LinkDrop}
    for link in links:
        st = link.stats()
        for direction in ("rx", "tx"):
            labels = {"interface": link.name, "direction": direction}
            packets.append(("passnat_interface_packets_total", labels, float(st.get(f"{direction}_packets", 0))))
            octets.append(("passnat_interface_bytes_total", labels, float(st.get(f"{direction}_bytes", 0))))
        ring.append(("passnat_interface_ring_drops_total", {"interface": link.name}, float(st.get("ring_drops", 0))))
        counts = dict(st.get("counters", {}))
        counts[LinkDrop.RING_FULL.value] = int(st.get("ring_drops", 0))
        for d in LinkDrop:
            n = int(counts.get(d.value, 0))
            link_totals[d.value] = link_totals.get(d.value, 0) + n
            if d is not LinkDrop.INTERNAL_ERROR:
                if_drops.append(("passnat_interface_drops_total", {"interface": link.name, "reason": d.value}, float(n)))
    for k, v in daemon.items():
        if k in link_reasons:
            link_totals[k] = link_totals.get(k, 0) + int(v)
    link_drops = [("passnat_link_drops_total", {"reason": d.value}, float(link_totals.get(d.value, 0)))
                  for d in LinkDrop]
    extra = [
        ("passnat_interface_packets_total", "counter", "Frames received (rx) and sent (tx) per interface.", packets),
        ("passnat_interface_bytes_total", "counter", "Bytes received (rx) and sent (tx) per interface.", octets),
        ("passnat_interface_ring_drops_total", "counter", "Frames the kernel dropped at a full receive ring.", ring),
        ("passnat_interface_drops_total", "counter", "Link-layer drops per interface and reason.", if_drops),
        ("passnat_link_drops_total", "counter", "Link-layer drops by reason, all interfaces (passnat show counters).",
         link_drops),
        ("passnat_daemon_events_total", "counter", "Daemon events (ARP, link layer, reloads).",
         [("passnat_daemon_events_total", {"event": k}, float(v)) for k, v in sorted(daemon.items())
          if k not in link_reasons]),
        *vpn_metrics(vpn(router, router_now(router, now), sessions=sessions)),
        *build_metrics(uptime),
    ]
    return engine_metrics.render(router, extra, sessions=sessions)


def router_now(router: Router, now: float | None) -> float:
    """``now``, or the latest time the engine has seen."""
    if now is not None:
        return now
    return float(getattr(router, "_clock", 0.0))


def build_metrics(uptime: float | None) -> list[tuple[str, str, str, list[tuple[str, dict[str, str], float]]]]:
    import platform

    import passnat
    from passnat import speedups

    out = [
        ("passnat_build_info", "gauge", "passnat version and Python; always 1.",
         [("passnat_build_info", {"version": passnat.__version__, "python": platform.python_version(),
                                  "implementation": platform.python_implementation()}, 1.0)]),
        ("passnat_data_plane_info", "gauge", "Which data plane runs: compiled (passnat._speedups) or python; always 1.",
         [("passnat_data_plane_info", {"mode": speedups.mode(), "reason": speedups.reason()}, 1.0)]),
    ]
    if uptime is not None:
        out.append(("passnat_uptime_seconds", "gauge", "Seconds since the daemon started.",
                    [("passnat_uptime_seconds", {}, round(uptime, 3))]))
    return out


# ---------------------------------------------------------------- VPN view

IKE_PORTS = frozenset((500, 4500))


def vpn(router: Router, now: float, limit: int | None = None, sessions: Iterable[Any] | None = None) -> dict[str, Any]:
    """What an operator asks about VPNs, built only from the VPN sessions (never a record per
    session of the whole table):

    * ``esp``: one group per (interface, server): its inside hosts, each with session id, state,
      outbound and inbound SPIs and pairs;
    * ``pptp``: the PPTP control connections with their calls (Call-ID mappings);
    * ``ike``: IKE and NAT-T sessions (UDP 500/4500 on either side);
    * ``counts``: how many of each, also when ``limit`` cut the lists short.
    """
    esp: dict[tuple[str, str], list[dict[str, Any]]] = {}
    pptp: list[dict[str, Any]] = []
    ike: list[dict[str, Any]] = []
    n_esp = n_pptp = n_ike = 0
    for s in router.table.vpn_sessions() if sessions is None else sessions:
        proto = s.proto
        if proto == 50:
            n_esp += 1
            if limit is None or n_esp <= limit:
                rec: dict[str, Any] = router.session_record(s, now)
                esp.setdefault((rec["interface"], rec["remote"]), []).append(rec)
        elif proto == 6 and s.handler == "pptp":
            n_pptp += 1
            if limit is None or n_pptp <= limit:
                pptp.append(router.session_record(s, now))
        elif proto == 17 and (s.in_port in IKE_PORTS or s.rem_port in IKE_PORTS):
            n_ike += 1
            if limit is None or n_ike <= limit:
                ike.append(router.session_record(s, now))
    groups = []
    for (itf, server), recs in sorted(esp.items(), key=lambda kv: (kv[0][0], _ip_key(kv[0][1]))):
        hosts = []
        for r in sorted(recs, key=lambda r: (_ip_key(r["inside"]), r["id"])):
            esp_info = r.get("esp") or {}
            hosts.append({"host": r["inside"], "session": r["id"], "type": r["type"], "outside": r["outside"],
                          "state": esp_info.get("state", ""), "mode": esp_info.get("mode", ""),
                          "out_spis": list(esp_info.get("out_spis", [])), "in_spis": list(esp_info.get("in_spis", [])),
                          "pairs": [list(p) for p in esp_info.get("pairs", [])], "remaining": round(r["remaining"], 1)})
        groups.append({"interface": itf, "server": server, "hosts": hosts})
    controls = []
    for r in sorted(pptp, key=lambda r: r["id"]):
        info = r.get("pptp") or {}
        controls.append({"session": r["id"], "interface": r["interface"], "inside": r["inside"],
                         "inside_port": r["inside_port"], "outside": r["outside"], "outside_port": r["outside_port"],
                         "remote": r["remote"], "remote_port": r["remote_port"], "role": info.get("role", ""),
                         "state": r.get("state", ""), "calls": list(info.get("calls", [])),
                         "remaining": round(r["remaining"], 1)})
    ikes = [{"session": r["id"], "interface": r["interface"], "type": r["type"], "inside": r["inside"],
             "inside_port": r["inside_port"], "outside": r["outside"], "outside_port": r["outside_port"],
             "remote": r["remote"], "remote_port": r["remote_port"],
             "nat_t": 4500 in (r["inside_port"], r["remote_port"]), "remaining": round(r["remaining"], 1)}
            for r in sorted(ike, key=lambda r: r["id"])]
    return {"esp": groups, "pptp": controls, "ike": ikes,
            "counts": {"esp_sessions": n_esp, "pptp_controls": n_pptp, "ike_sessions": n_ike}}


def _ip_key(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split("."))
    except ValueError:
        return (1 << 30,)


def vpn_metrics(view: dict[str, Any]) -> list[tuple[str, str, str, list[tuple[str, dict[str, str], float]]]]:
    """The VPN view as gauges: ESP groups and hosts per server, SPI owners, PPTP calls, IKE sessions."""
    group_hosts, owners = [], []
    for g in view["esp"]:
        base = {"interface": g["interface"], "server": g["server"]}
        group_hosts.append(("passnat_esp_group_hosts", base, float(len({h["host"] for h in g["hosts"]}))))
        for h in g["hosts"]:
            for direction, key in (("out", "out_spis"), ("in", "in_spis")):
                for spi in h[key]:
                    owners.append(("passnat_esp_spi_owner", base | {"host": h["host"], "direction": direction,
                                                                   "spi": spi, "state": h["state"]}, 1.0))
    roles: dict[str, int] = {}
    calls: dict[str, int] = {}
    for c in view["pptp"]:
        roles[c["role"]] = roles.get(c["role"], 0) + 1
        for call in c["calls"]:
            calls[str(call.get("state"))] = calls.get(str(call.get("state")), 0) + 1
    ike: dict[str, int] = {}
    for s in view["ike"]:
        kind = "nat-t" if s["nat_t"] else "ike"
        ike[kind] = ike.get(kind, 0) + 1
    return [
        ("passnat_esp_groups", "gauge", "ESP groups: (interface, server) pairs with at least one inside host.",
         [("passnat_esp_groups", {}, float(len(view["esp"])))]),
        ("passnat_esp_group_hosts", "gauge", "Inside hosts with ESP sessions to each server.", group_hosts),
        ("passnat_esp_spi_owner", "gauge", "1 for each ESP SPI and the inside host that owns it (direction out: "
         "the host's outbound SPI, in: the SPI its server sends with).", owners),
        ("passnat_pptp_control_connections", "gauge", "PPTP control connections (TCP 1723) by role.",
         [("passnat_pptp_control_connections", {"role": r}, float(n)) for r, n in sorted(roles.items())]),
        ("passnat_pptp_calls", "gauge", "PPTP calls by state (Call-ID mappings).",
         [("passnat_pptp_calls", {"state": st}, float(n)) for st, n in sorted(calls.items())]),
        ("passnat_ike_sessions", "gauge", "IKE (UDP 500) and NAT-T (UDP 4500) sessions.",
         [("passnat_ike_sessions", {"kind": k}, float(ike.get(k, 0))) for k in ("ike", "nat-t")]),
    ]


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
    link_events.update({k: int(v) for k, v in sorted(link_totals.items()) if k.startswith("ha_")})  # docs/ha.md
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
