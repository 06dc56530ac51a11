"""Metrics for a monitoring system (B6): the router's counters in Prometheus text format.

``render(router, now, extra)`` produces the text exposition format (version
0.0.4) that Prometheus, VictoriaMetrics, Telegraf and friends scrape:

  passnat_drops_total{reason="no_session"}      every drop reason (Drop), 0 or not
  passnat_events_total{event="esp_spi_learned"} every other event counter
  passnat_sessions{protocol="tcp",type="napt"}  live sessions by protocol and type
  passnat_sessions_created_total                sessions ever created
  passnat_session_maximum                       the configured maximum

``extra`` lets the daemon add its own gauges and counters (per-interface
packets and bytes, ring drops) in the same exposition.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING

from passnat.nat.drops import EXPLAIN, Drop
from passnat.packet.ipv4 import proto_name

if TYPE_CHECKING:
    from passnat.nat.router import Router
    from passnat.nat.session import Session

Sample = tuple[str, dict[str, str], float]  # (metric name, labels, value)


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))
    return "{" + inner + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def samples(router: Router, sessions: Iterable[Session] | None = None) -> list[tuple[str, str, str, list[Sample]]]:
    """(name, type, help, samples) families for the router's own metrics (``sessions``: the table's
    sessions when the caller already has them, so a scrape walks the table once)."""
    counters = router.counters()
    drop_names = {d.value for d in Drop}
    drops = [("passnat_drops_total", {"reason": d.value}, float(counters.get(d.value, 0))) for d in Drop]
    events = [("passnat_events_total", {"event": k}, float(v)) for k, v in sorted(counters.items())
              if k not in drop_names and k not in ("sessions", "sessions_created")]
    # the table keeps live sessions by (protocol, type): a scrape never walks it
    by_kind: Counter[tuple[int, str]] = Counter(router.table.kinds)
    dynamic = len(router.static.bindings()) if router.static is not None else 0
    if dynamic:
        by_kind[(0, "dynamic")] = dynamic
    live = [("passnat_sessions", {"protocol": "any" if p == 0 else proto_name(p), "type": t}, float(n))
            for (p, t), n in sorted(by_kind.items())]
    return [
        ("passnat_drops_total", "counter", "Packets dropped, by reason (see passnat show counters).", drops),
        ("passnat_events_total", "counter", "Other engine events (translations, holds, learned SPIs, ...).", events),
        ("passnat_sessions", "gauge", "Live NAT sessions by protocol and type.", live),
        ("passnat_sessions_created_total", "counter", "NAT sessions ever created.",
         [("passnat_sessions_created_total", {}, float(counters.get("sessions_created", 0)))]),
        ("passnat_session_maximum", "gauge", "The configured session maximum (nat session maximum).",
         [("passnat_session_maximum", {}, float(router.config.nat.session.maximum))]),
    ]


def render(router: Router, extra: Iterable[tuple[str, str, str, list[Sample]]] = (),
           sessions: Iterable[Session] | None = None) -> str:
    """Prometheus text exposition of the router's metrics plus ``extra`` families."""
    lines: list[str] = []
    for name, kind, help_text, family in list(samples(router, sessions)) + list(extra):
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        for metric, labels, value in family:
            text = str(int(value)) if float(value).is_integer() else repr(float(value))
            lines.append(f"{metric}{_labels(labels)} {text}")
    return "\n".join(lines) + "\n"


def explain(reason: str) -> str:
    """The operator's text for a drop reason name."""
    for d, text in EXPLAIN.items():
        if d.value == reason:
            return text
    return ""
