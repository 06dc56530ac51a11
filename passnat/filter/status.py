"""``show status filter`` data: rules with counters and the dynamic states (R16, B6).

``status(filter, now)`` returns plain records (JSON-ready); ``format_status``
turns them into SEIL's ``show status filter`` lines (seil-syntax.md §7)::

    page prenat id HTTP pass out on pppoe1 proto tcp from any to any port 80 count 2444816
    page postnat id DHCP block in log on any proto udp from 192.168.3.0/24 to any port 66-68 count 72
    page dynamic ttl 1477/1500 id HTTPS-007a24f2 pass out on pppoe1 proto tcp from 192.168.10.211 port 65523 to 203.0.113.149 port 443 count 121832

Pages: ``out`` rules are ``prenat`` (they see pre-NAT addresses), ``in`` rules
``postnat``; an ``in/out`` rule is listed on both pages (one counter).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from passnat.config.model import FilterDirection
from passnat.packet.ipv4 import ntoa, proto_name

if TYPE_CHECKING:
    from passnat.filter.engine import Filter
    from passnat.filter.rules import Rule
    from passnat.filter.state import State

_PAGES = {FilterDirection.IN: ["postnat"], FilterDirection.OUT: ["prenat"],
          FilterDirection.INOUT: ["prenat", "postnat"]}


def _protocol(rule: Rule) -> str:
    c = rule.config
    if c.protocol is None:
        return "any"
    if c.protocol_name:
        return c.protocol_name
    return str(c.protocol)


def rule_record(rule: Rule) -> dict[str, Any]:
    c = rule.config
    return {
        "position": rule.position, "name": c.name, "pages": _PAGES[c.direction],
        "interface": c.interface, "direction": c.direction.value, "action": c.action.value,
        "protocol": _protocol(rule), "icmp_type": c.icmp_type,
        "src": str(c.src), "srcport": str(c.srcport) if c.srcport else None,
        "dst": str(c.dst), "dstport": str(c.dstport) if c.dstport else None,
        "ipopts": c.ipopts, "state": c.state,
        "state_ttl": (c.state_ttl if c.state_ttl is not None else "normal") if c.state else None,
        "logging": c.logging, "label": c.label, "enabled": c.enabled, "count": rule.count,
    }


def state_record(st: State, now: float) -> dict[str, Any]:
    proto, src, sport, dst, dport = st.key
    ports = proto in (6, 17)
    return {
        "id": st.id, "name": f"{st.rule}-{st.id:08x}", "rule": st.rule,
        "protocol": proto_name(proto), "protocol_number": proto,
        "src": ntoa(src), "srcport": sport if ports else None,
        "dst": ntoa(dst), "dstport": dport if ports else None,
        "icmp_id": sport if proto == 1 else None,
        "origins": [{"interface": i, "direction": "in" if inbound else "out"}
                    for i, inbound in sorted(st.origins)],
        "ttl": int(st.remaining(now) + 0.999), "timer": int(st.ttl), "count": st.decisions(),
        "age": max(0.0, now - st.created),
    }


def status(f: Filter, now: float) -> dict[str, Any]:
    t = f.states
    return {
        "default": {"action": "pass" if f.default_pass else "block", "blocked": f.default.count},
        "rules": [rule_record(r) for r in f.rules],
        "states": [state_record(st, now) for st in sorted(t.by_id.values(), key=lambda s: s.id)],
        "counters": {"states": len(t), "states_created": t.created_total, "states_expired": t.expired_total,
                     "state_table_full": t.full_total},
    }


def _ports(word: str, ports: object) -> str:
    return f" {word} {ports}" if ports is not None else ""


def format_status(st: dict[str, Any]) -> list[str]:
    """SEIL-style ``show status filter`` lines for ``status()`` output."""
    lines: list[str] = []
    for r in st["rules"]:
        if not r["enabled"]:
            continue
        log = " log" if r["logging"] == "on" else ""
        icmp = f" icmp-type {r['icmp_type']}" if r["icmp_type"] is not None else ""
        for page in r["pages"]:
            direction = "out" if page == "prenat" else "in"
            lines.append(f"page {page} id {r['name']} {r['action']} {direction}{log} on {r['interface']} "
                         f"proto {r['protocol']}{icmp} from {r['src']}{_ports('port', r['srcport'])} "
                         f"to {r['dst']}{_ports('port', r['dstport'])} count {r['count']}")
    for s in st["states"]:
        for origin in s["origins"]:
            lines.append(f"page dynamic ttl {s['ttl']}/{s['timer']} id {s['name']} pass {origin['direction']} "
                         f"on {origin['interface']} proto {s['protocol']} from {s['src']}"
                         f"{_ports('port', s['srcport'])} to {s['dst']}{_ports('port', s['dstport'])} "
                         f"count {s['count']}")
    d = st["default"]
    lines.append(f"default {d['action']} blocked {d['blocked']}")
    return lines
