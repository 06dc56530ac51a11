"""The status page (``GET /`` on ``passnat run --http``): one HTML document, no JavaScript.

Sections, top to bottom: a summary line (host name, version, uptime, data
plane, sessions of maximum), three inline-SVG charts from the daemon's
``History`` (live sessions and packets/s over the last hour, drops by reason
in that window), the interfaces with their counters, the VPN view (ESP
groups per server with each host's SPIs and pairing state, PPTP control
connections with their Call-ID mappings, IKE/NAT-T sessions), the doctor's
findings and the non-zero drop counters with their explanations.

Every value is HTML-escaped; the page refreshes itself every 10 s (``<meta
http-equiv=refresh>``); long tables stop at ``ROW_LIMIT`` rows with a line
saying how many more there are (``passnat show status nat`` has them all).
Stable ids and classes for tests and scrapers: ``#esp`` (rows
``tr.esp-host`` with ``data-host``/``data-server``), ``#pptp``, ``#ike``,
``#interfaces``, ``#doctor``, ``#drops``, charts ``svg#chart-sessions``,
``svg#chart-packets``, ``svg#chart-drops``.
"""
from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape
from typing import Any

from passnat.service.history import History

ROW_LIMIT = 200
REFRESH = 10

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.2em;color:#1d232a;background:#fafbfc}
h1{font-size:1.4em;margin:0 0 .2em}h2{font-size:1.1em;margin:1.4em 0 .4em;border-bottom:1px solid #d0d7de}
h3{font-size:1em;margin:.8em 0 .3em}
.summary span{margin-right:1.4em}.muted{color:#57606a}
table{border-collapse:collapse;margin:.3em 0 .6em;background:#fff}
th,td{border:1px solid #d0d7de;padding:.2em .5em;text-align:left;vertical-align:top}
th{background:#f0f3f6}td.n{text-align:right;font-variant-numeric:tabular-nums}
code{font:12px ui-monospace,monospace}
.charts{display:flex;flex-wrap:wrap;gap:1em}.chart{background:#fff;border:1px solid #d0d7de;padding:.4em}
.sev-error{color:#b42318;font-weight:bold}.sev-warning{color:#9a6700;font-weight:bold}.sev-info{color:#0969da}
.state-paired,.state-owner,.state-established{color:#1a7f37}
"""


@dataclass
class PageData:
    hostname: str
    version: str
    uptime: float
    data_plane: str
    data_plane_reason: str
    sessions: int
    maximum: int
    interfaces: dict[str, dict[str, Any]]
    counters: dict[str, Any]
    vpn: dict[str, Any]
    doctor: list[dict[str, Any]]
    history: History
    reload: str = ""
    generated: float = field(default_factory=time.time)


def render(d: PageData) -> str:
    title = f"passnat {d.hostname}" if d.hostname else "passnat"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="refresh" content="{REFRESH}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        '<p class="summary" id="summary">'
        f"<span>version {escape(d.version)}</span>"
        f"<span>up {escape(_duration(d.uptime))}</span>"
        f'<span title="{escape(d.data_plane_reason)}">data plane <b id="data-plane">{escape(d.data_plane)}</b></span>'
        f'<span>sessions <b id="sessions">{d.sessions}</b> of {d.maximum}</span>'
        + (f"<span>{escape(d.reload)}</span>" if d.reload else "")
        + f'<span class="muted">{escape(time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(d.generated)))}'
        "</span></p>",
        _charts(d.history),
        _interfaces(d.interfaces, d.counters),
        _vpn(d.vpn),
        _doctor(d.doctor),
        _drops(d.counters),
        '<p class="muted">Read-only. Metrics for Prometheus: <a href="/metrics">/metrics</a>. '
        "Everything here is also in <code>passnat show</code> and <code>passnat doctor</code>.</p>",
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


# ---------------------------------------------------------------- charts


def _charts(h: History) -> str:
    samples = h.series()
    sessions = [(s.time, float(s.sessions)) for s in samples]
    rates = h.rates()
    rx = [(t, r) for t, r, _ in rates]
    tx = [(t, x) for t, _, x in rates]
    drops = h.drops_in_window()
    span = (samples[-1].time - samples[0].time) if len(samples) > 1 else 0.0
    window = f"last {_duration(span)}" if span else "since start"
    return ('<h2>Last hour</h2><div class="charts">'
            + _line_chart("chart-sessions", "Live sessions", [("sessions", "#0969da", sessions)])
            + _line_chart("chart-packets", "Packets/s (all interfaces)",
                          [("received", "#1a7f37", rx), ("sent", "#8250df", tx)])
            + _bar_chart("chart-drops", f"Drops by reason ({window})", drops)
            + "</div>")


def _line_chart(ident: str, title: str, series: Sequence[tuple[str, str, list[tuple[float, float]]]],
                w: int = 360, h: int = 170) -> str:
    left, right, top, bottom = 48, 8, 34, 20
    pw, ph = w - left - right, h - top - bottom
    pts = [p for _, _, s in series for p in s]
    out = [f'<div class="chart"><svg id="{ident}" role="img" aria-label="{escape(title)}" width="{w}" height="{h}" '
           f'viewBox="0 0 {w} {h}" xmlns="http://www.w3.org/2000/svg">',
           f'<text x="4" y="14" font-size="12" font-weight="bold">{escape(title)}</text>',
           f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#d0d7de"/>']
    if not pts:
        out.append(f'<text x="{left + 8}" y="{top + ph / 2}" font-size="12" fill="#57606a">no samples yet</text>')
        return "".join(out) + "</svg></div>"
    t0 = min(t for t, _ in pts)
    t1 = max(max(t for t, _ in pts), t0 + 60.0)
    vmax = max(v for _, v in pts)
    vmax = _nice(vmax)
    out.append(f'<text x="{left - 4}" y="{top + 9}" font-size="10" text-anchor="end">{_num(vmax)}</text>')
    out.append(f'<text x="{left - 4}" y="{top + ph}" font-size="10" text-anchor="end">0</text>')
    out.append(f'<text x="{left}" y="{h - 6}" font-size="10">{escape(time.strftime("%H:%M", time.localtime(t0)))}'
               "</text>")
    out.append(f'<text x="{left + pw}" y="{h - 6}" font-size="10" text-anchor="end">'
               f'{escape(time.strftime("%H:%M:%S", time.localtime(t1)))}</text>')
    lx = left
    for name, color, s in series:
        if s:
            xy = " ".join(f"{left + (t - t0) / (t1 - t0) * pw:.1f},{top + ph - v / vmax * ph:.1f}" for t, v in s)
            out.append(f'<polyline class="series" data-name="{escape(name)}" fill="none" stroke="{color}" '
                       f'stroke-width="1.5" points="{xy}"/>')
            if len(s) == 1:
                x, y = xy.split(",")
                out.append(f'<circle cx="{x}" cy="{y}" r="2.5" fill="{color}"/>')
        last = _num(s[-1][1]) if s else "-"
        out.append(f'<text x="{lx}" y="28" font-size="11" fill="{color}">{escape(name)} {last}</text>')
        lx += 120
    return "".join(out) + "</svg></div>"


def _bar_chart(ident: str, title: str, values: dict[str, int], w: int = 420) -> str:
    rows = list(values.items())[:12]
    bar_h, top, label_w = 16, 22, 190
    h = max(170, top + max(1, len(rows)) * (bar_h + 4) + 6)  # as tall as the line charts at least
    out = [f'<div class="chart"><svg id="{ident}" role="img" aria-label="{escape(title)}" width="{w}" height="{h}" '
           f'viewBox="0 0 {w} {h}" xmlns="http://www.w3.org/2000/svg">',
           f'<text x="4" y="14" font-size="12" font-weight="bold">{escape(title)}</text>']
    if not rows:
        out.append(f'<text x="8" y="{top + 12}" font-size="12" fill="#57606a">no drops</text>')
        return "".join(out) + "</svg></div>"
    vmax = max(v for _, v in rows)
    for i, (reason, v) in enumerate(rows):
        y = top + i * (bar_h + 4)
        bw = max(1.0, v / vmax * (w - label_w - 60))
        out.append(f'<text x="4" y="{y + 12}" font-size="11">{escape(reason)}</text>'
                   f'<rect class="bar" data-reason="{escape(reason)}" x="{label_w}" y="{y}" width="{bw:.1f}" '
                   f'height="{bar_h}" fill="#cf222e"/>'
                   f'<text x="{label_w + bw + 4:.1f}" y="{y + 12}" font-size="11">{v}</text>')
    return "".join(out) + "</svg></div>"


def _nice(v: float) -> float:
    """The smallest 1, 2 or 5 times a power of ten that is >= ``v`` (the chart's top)."""
    if v <= 0:
        return 1.0
    mag = 10.0 ** math.floor(math.log10(v))
    for m in (1, 2, 5, 10):
        if m * mag >= v:
            return m * mag
    return 10 * mag


def _num(v: float) -> str:
    if v >= 1e6:
        return f"{v / 1e6:.1f}M"
    if v >= 1e4:
        return f"{v / 1e3:.0f}k"
    return f"{v:.0f}" if v == int(v) or v >= 100 else f"{v:.1f}"


# ---------------------------------------------------------------- tables


def _interfaces(interfaces: dict[str, dict[str, Any]], counters: dict[str, Any]) -> str:
    rows = []
    for name, st in interfaces.items():
        drops = sum(int(v) for v in (st.get("drops") or {}).values()) + int(st.get("ring_drops", 0))
        rows.append(f'<tr data-interface="{escape(name)}"><td>{escape(name)}</td><td>{escape(str(st.get("linux", "")))}</td>'
                    + "".join(f'<td class="n">{int(st.get(k, 0))}</td>'
                              for k in ("rx_packets", "rx_bytes", "tx_packets", "tx_bytes", "ring_drops"))
                    + f'<td class="n">{drops}</td></tr>')
    engine = sum(d["count"] for d in counters.get("engine", {}).get("drops", []))
    return ('<h2>Interfaces</h2><table id="interfaces"><tr><th>interface</th><th>Linux</th><th>rx packets</th>'
            "<th>rx bytes</th><th>tx packets</th><th>tx bytes</th><th>ring drops</th><th>link drops</th></tr>"
            + "".join(rows) + "</table>"
            + f'<p class="muted">Engine drops (all reasons): {engine}.</p>')


def _vpn(v: dict[str, Any]) -> str:
    out = ["<h2>VPN passthrough</h2>", "<h3>ESP (IPsec without NAT-T), per server</h3>"]
    counts = v.get("counts", {})
    if not v["esp"]:
        out.append('<p class="muted" id="esp">No ESP sessions.</p>')
    else:
        out.append('<table id="esp"><tr><th>interface</th><th>server</th><th>inside host</th><th>session</th><th>state</th>'
               "<th>outbound SPIs</th><th>inbound SPIs</th><th>pairs (out / in)</th><th>idle left</th></tr>")
    for g in v["esp"]:
        first = True
        for h in g["hosts"]:
            server = (f'<td rowspan="{len(g["hosts"])}">{escape(g["interface"])}</td>'
                      f'<td rowspan="{len(g["hosts"])}">{escape(g["server"])}</td>') if first else ""
            first = False
            pairs = "<br>".join(f"<code>{escape(a)} / {escape(b)}</code>" for a, b in h["pairs"])
            out.append(f'<tr class="esp-host" data-host="{escape(h["host"])}" data-server="{escape(g["server"])}">'
                       f"{server}<td>{escape(h['host'])}</td><td class=\"n\">{h['session']}</td>"
                       f'<td class="state-{escape(h["state"].split(" ")[0])}">{escape(h["state"])}</td>'
                       f"<td>{_codes(h['out_spis'])}</td><td>{_codes(h['in_spis'])}</td><td>{pairs}</td>"
                       f'<td class="n">{escape(_duration(h["remaining"]))}</td></tr>')
    if v["esp"]:
        out.append("</table>" + _more(counts.get("esp_sessions", 0), sum(len(g["hosts"]) for g in v["esp"])))

    out.append("<h3>PPTP control connections and their calls</h3>")
    if not v["pptp"]:
        out.append('<p class="muted" id="pptp">No PPTP control connections.</p>')
    else:
        out.append('<table id="pptp"><tr><th>session</th><th>inside</th><th>global</th><th>remote</th><th>role</th>'
               "<th>TCP</th><th>calls: Call ID inside = global &harr; peer (state, GRE session)</th></tr>")
    for c in v["pptp"]:
        calls = "<br>".join(
            f"<code>{_v(k.get('inside_call_id'))} = {_v(k.get('outside_call_id'))} &harr; "
            f"{_v(k.get('peer_call_id'))}</code> ({escape(str(k.get('state', '')))}, GRE "
            f"{_v(k.get('gre_session'))})" for k in c["calls"]) or '<span class="muted">no call</span>'
        out.append(f'<tr class="pptp-control" data-host="{escape(c["inside"])}"><td class="n">{c["session"]}</td>'
                   f"<td>{escape(_hp(c['inside'], c['inside_port']))}</td>"
                   f"<td>{escape(_hp(c['outside'], c['outside_port']))}</td>"
                   f"<td>{escape(_hp(c['remote'], c['remote_port']))}</td><td>{escape(c['role'])}</td>"
                   f'<td class="state-{escape(str(c["state"]))}">{escape(str(c["state"]))}</td><td>{calls}</td></tr>')
    if v["pptp"]:
        out.append("</table>" + _more(counts.get("pptp_controls", 0), len(v["pptp"])))

    out.append("<h3>IKE and NAT-T (UDP 500/4500)</h3>")
    if not v["ike"]:
        out.append('<p class="muted" id="ike">No IKE or NAT-T sessions.</p>')
    else:
        out.append('<table id="ike"><tr><th>session</th><th>type</th><th>inside</th><th>global</th><th>remote</th>'
               "<th>kind</th><th>idle left</th></tr>")
    for s in v["ike"]:
        out.append(f'<tr class="ike-session" data-host="{escape(s["inside"])}"><td class="n">{s["session"]}</td>'
                   f"<td>{escape(s['type'])}</td><td>{escape(_hp(s['inside'], s['inside_port']))}</td>"
                   f"<td>{escape(_hp(s['outside'], s['outside_port']))}</td>"
                   f"<td>{escape(_hp(s['remote'], s['remote_port']))}</td>"
                   f"<td>{'NAT-T' if s['nat_t'] else 'IKE'}</td>"
                   f'<td class="n">{escape(_duration(s["remaining"]))}</td></tr>')
    if v["ike"]:
        out.append("</table>" + _more(counts.get("ike_sessions", 0), len(v["ike"])))
    return "".join(out)


def _doctor(findings: list[dict[str, Any]]) -> str:
    if not findings:
        return '<h2>Doctor</h2><p id="doctor" class="muted">No VPN passthrough problem seen.</p>'
    rows = "".join(f'<tr class="finding" data-code="{escape(f["code"])}"><td class="sev-{escape(f["severity"])}">'
                   f"{escape(f['severity'])}</td><td><b>{escape(f['title'])}</b><br>{escape(f['detail'])}</td>"
                   f"<td>{escape(f['fix'])}</td></tr>" for f in findings)
    return ('<h2>Doctor</h2><table id="doctor"><tr><th>severity</th><th>finding</th><th>fix</th></tr>'
            + rows + "</table>")


def _drops(counters: dict[str, Any]) -> str:
    rows = []
    for layer in ("engine", "link"):
        for d in counters.get(layer, {}).get("drops", []):
            if d["count"]:
                rows.append(f'<tr data-reason="{escape(d["name"])}"><td>{layer}</td><td><code>{escape(d["name"])}</code>'
                            f'</td><td class="n">{int(d["count"])}</td><td>{escape(d["explain"])}</td></tr>')
    if not rows:
        return '<h2>Drops</h2><p id="drops" class="muted">No packet dropped since start.</p>'
    return ('<h2>Drops since start</h2><table id="drops"><tr><th>layer</th><th>reason</th><th>count</th>'
            "<th>meaning</th></tr>" + "".join(rows) + "</table>")


def _more(total: int, shown: int) -> str:
    if total > shown:
        return (f'<p class="muted">{total - shown} more not shown (the page lists {ROW_LIMIT}); '
                "<code>passnat show status nat</code> has them all.</p>")
    return ""


def _codes(values: list[str]) -> str:
    return " ".join(f"<code>{escape(x)}</code>" for x in values) or '<span class="muted">-</span>'


def _hp(addr: Any, port: Any) -> str:
    return f"{addr}:{port}" if port not in (None, "") else str(addr)


def _v(x: Any) -> str:
    return "-" if x is None else escape(str(x))


def _duration(seconds: float) -> str:
    s = int(max(0.0, seconds))
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    if d:
        return f"{d}d {h:02d}:{m:02d}:{s:02d}"
    return f"{h:02d}:{m:02d}:{s:02d}"
