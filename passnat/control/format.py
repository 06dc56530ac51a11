"""Text forms of the operator's commands: pure functions from ``views`` data to lines.

``show status nat`` follows SEIL's line format exactly (seil-syntax.md §7)::

       1:napt  pppoe1   tcp   192.168.1.135:50783 =  198.51.100.111:50783 <->   192.0.2.222:443 [00:11:53]

that is ``%4d:%-5s %-8s %-3s %15s:%-5s = %15s:%-5s <-> %17s [HH:MM:SS]`` with the
remote written ``address:port`` right-aligned, and the bracket the remaining
idle time.  Protocols without ports (ESP, GRE without PPTP, others) leave the
``:port`` columns blank.  A record with ESP or PPTP details gets indented
continuation lines (SPI owners and pairs, Call-ID mappings), and a session
made by hairpinning (``nat reflect``) a ``reflect:`` line.  Address-only
bindings (``nat dynamic``) are listed under "List of active IP mapping".
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def hms(seconds: float | None) -> str:
    if seconds is None:
        return "--:--:--"
    s = max(0, int(seconds + 0.5))
    return f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}"


def _addr_port(addr: Any, port: Any) -> str:
    return f"{addr!s:>15}" + (f":{port!s:<5}" if port is not None else " " * 6)


def nat_line(r: dict[str, Any]) -> str:
    """One session in SEIL's ``show status nat`` format."""
    remote = str(r.get("remote") or "*")
    if r.get("remote_port") is not None:
        remote += f":{r['remote_port']}"
    return (f"{r.get('id') if r.get('id') is not None else 0:4d}:{r.get('type', '?'):<5} {r.get('interface', ''):<8} "
            f"{r.get('protocol', '?'):<3} {_addr_port(r.get('inside'), r.get('inside_port'))} = "
            f"{_addr_port(r.get('outside'), r.get('outside_port'))} <-> {remote:>17} "
            f"[{hms(r.get('remaining'))}]")


def _detail_lines(r: dict[str, Any]) -> list[str]:
    pad = " " * 10
    out: list[str] = []
    if r.get("reflect"):
        out.append(f"{pad}reflect: hairpin, inside to inside through {r.get('remote')} (nat reflect)")
    esp = r.get("esp")
    if isinstance(esp, dict):
        line = f"{pad}esp: mode {esp.get('mode')}, {esp.get('state')}"
        if esp.get("out_spis"):
            line += f"; outbound SPI {', '.join(esp['out_spis'])}"
        if esp.get("in_spis"):
            line += f"; inbound SPI {', '.join(esp['in_spis'])} -> {r.get('inside')}"
        out.append(line)
        for a, b in esp.get("pairs") or []:
            out.append(f"{pad}     SA pair: out {a} / in {b}")
    pptp = r.get("pptp")
    if isinstance(pptp, dict):
        if "calls" in pptp:
            out.append(f"{pad}pptp: {pptp.get('role', 'control connection')}, "
                       f"{len(pptp['calls'])} call(s)")
            for c in pptp["calls"]:
                gre = c.get("gre_session")
                out.append(f"{pad}     call id {c.get('inside_call_id')} = {c.get('outside_call_id')} <-> "
                           f"peer call id {_none(c.get('peer_call_id'))} ({c.get('state')})"
                           + (f", gre session {gre}" if gre is not None else ""))
        else:
            ctrl = pptp.get("control_session")
            out.append(f"{pad}pptp gre: call id {pptp.get('inside_call_id')} = {pptp.get('outside_call_id')} "
                       f"<-> peer call id {_none(pptp.get('peer_call_id'))}"
                       + (f", control session {ctrl}" if ctrl is not None else ""))
    return out


def _none(v: Any) -> str:
    return "-" if v is None else str(v)


def format_status_nat(records: Iterable[dict[str, Any]]) -> str:
    mappings, sessions = [], []
    for r in records:
        if r.get("id") is None:
            mappings.append(f"{r.get('type', '?'):<7} {r.get('interface', ''):<8} {r.get('inside')!s:>15} = "
                            f"{r.get('outside')!s:>15} [{hms(r.get('remaining'))}]")
        else:
            sessions.append(nat_line(r))
            sessions.extend(_detail_lines(r))
    return "\n".join(["List of active IP mapping:", *mappings, "", "List of active sessions:", *sessions]) + "\n"


# ---------------------------------------------------------------- filter


def format_status_filter(data: dict[str, Any]) -> str:
    """SEIL's ``show status filter`` lines; the filter owns that format (filter/status.py)."""
    from passnat.filter.status import format_status

    return "\n".join(format_status(data)) + "\n"


# ---------------------------------------------------------------- counters


def format_counters(data: dict[str, Any]) -> str:
    out: list[str] = []
    for title, section in (("Drops in the engine", data.get("engine", {})),
                           ("Drops in the link layer", data.get("link", {}))):
        out.append(f"{title}:")
        for d in section.get("drops", []):
            out.append(f"  {d['name']:<32} {d['count']:>12}  {d['explain']}")
    out.append("Events:")
    for section in (data.get("engine", {}), data.get("link", {})):
        for name, value in section.get("events", {}).items():
            out.append(f"  {name:<32} {value:>12}")
    out.append("Interfaces:")
    out.append(f"  {'name':<8} {'linux':<12} {'rx packets':>12} {'rx bytes':>14} {'tx packets':>12} "
               f"{'tx bytes':>14} {'ring drops':>11}")
    for name, st in data.get("interfaces", {}).items():
        out.append(f"  {name:<8} {st.get('linux', ''):<12} {st.get('rx_packets', 0):>12} "
                   f"{st.get('rx_bytes', 0):>14} {st.get('tx_packets', 0):>12} {st.get('tx_bytes', 0):>14} "
                   f"{st.get('ring_drops', 0):>11}")
    if "uptime" in data:
        out.append(f"Uptime: {hms(data['uptime'])}")
    if "dataplane" in data:
        dp = data["dataplane"]
        out.append(f"Data plane: {dp.get('mode')} ({dp.get('reason')})")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- arp


def format_arp(records: Iterable[dict[str, Any]]) -> str:
    out = [f"{'interface':<10} {'address':<15} {'mac':<17} {'state':<10} {'age':>7} {'queued':>6}"]
    for r in records:
        age = "-" if r.get("age") is None else f"{r['age']:.0f}s"
        out.append(f"{r['interface']:<10} {r['address']:<15} {r.get('mac') or '(incomplete)':<17} "
                   f"{r['state']:<10} {age:>7} {r.get('queued', 0):>6}")
    return "\n".join(out) + "\n"


def format_doctor(findings: Iterable[dict[str, Any]]) -> str:
    """``passnat doctor``: each finding with what was seen and the fix."""
    findings = list(findings)
    if not findings:
        return "no VPN passthrough problems seen\n"
    out: list[str] = []
    for f in findings:
        out.append(f"[{f['severity']}] {f['title']} ({f['code']})")
        out.append(f"    seen: {f['detail']}")
        out.append(f"    fix:  {f['fix']}")
        out.append("")
    return "\n".join(out)
