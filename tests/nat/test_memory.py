"""Sessions and the cycle collector (passnat/nat/table.py): sessions are untracked and hold no cycle.

A session that the collector does not see must never be part of a reference
cycle, or it would never be freed.  For sessions of every kind (TCP, UDP, ICMP,
ESP, PPTP control and GRE, other protocols, static/dynamic, filter states), the
objects reachable from a live session never lead back to it, and a removed one
keeps nothing that could; the flow indexes stay tracked (so that the daemon's
``gc.freeze`` takes them out of every collection) even when they are empty.
"""
from __future__ import annotations

import gc
from typing import Any

import pytest
from scapy.all import GRE, IP, TCP, UDP, raw  # type: ignore[attr-defined]
from scapy.layers.inet import ICMP

import passnat
from passnat import speedups
from tests.nat.helpers import BASE, PC1, PC2, SRV, WAN_ADDR

CONFIG = BASE + """\
filter add keep interface lan1 direction out action pass protocol udp state enable
filter add rest interface lan1 direction out action pass
"""


def traffic(r: passnat.Router) -> None:
    r.handle("lan0", raw(IP(src=PC1, dst=SRV) / TCP(sport=40000, dport=443, flags="S")), 1.0)
    r.handle("lan0", raw(IP(src=PC1, dst=SRV) / UDP(sport=40001, dport=4000) / b"x"), 1.0)  # a filter state
    r.handle("lan0", raw(IP(src=PC1, dst=SRV) / UDP(sport=40002, dport=53) / b"x"), 1.0)
    r.handle("lan0", raw(IP(src=PC2, dst=SRV) / ICMP(type=8, id=7) / b"x"), 1.0)
    r.handle("lan0", raw(IP(src=PC2, dst=SRV, proto=50) / (b"\0\0\x10\x01" + bytes(20))), 1.0)  # ESP
    r.handle("lan0", raw(IP(src=PC2, dst=SRV, proto=51) / bytes(24)), 1.0)  # AH: other
    r.handle("lan0", raw(IP(src=PC1, dst=SRV) / TCP(sport=40003, dport=1723, flags="S")), 1.0)  # PPTP
    r.handle("lan0", raw(IP(src=PC1, dst=SRV) / GRE(proto=0x880B, version=1, key_present=1)), 1.0)
    r.handle("lan1", raw(IP(src=SRV, dst=WAN_ADDR) / UDP(sport=4000, dport=40001) / b"y"), 2.0)


def reaches(start: Any, target: Any, depth: int = 8) -> bool:
    """Whether ``target`` is reachable from ``start`` through referents (modules and types excluded)."""
    seen = {id(start)}
    frontier = [start]
    for _ in range(depth):
        nxt = []
        for obj in frontier:
            for ref in gc.get_referents(obj):
                if ref is target:
                    return True
                if id(ref) in seen or isinstance(ref, type) or type(ref).__name__ == "module":
                    continue
                seen.add(id(ref))
                nxt.append(ref)
        frontier = nxt
    return False


def test_no_session_is_part_of_a_reference_cycle() -> None:
    r = passnat.Router(passnat.parse_config(CONFIG))
    traffic(r)
    sessions = r.table.all()
    assert {s.handler for s in sessions} >= {"tcpudp", "icmp", "esp", "other", "pptp"}
    assert any(s.o_hop and s.o_hop[4] is not None for s in sessions)  # a filter counter (state or rule) in a hop
    for s in sessions:
        assert not any(reaches(ref, s) for ref in gc.get_referents(s)), s.describe()
    for s in sessions:
        r.table.remove(s)
        assert s.o_hop is None and s.i_hop is None
        assert not any(reaches(ref, s) for ref in gc.get_referents(s)), s.describe()


def test_sessions_and_the_wheel_are_untracked_the_indexes_tracked(monkeypatch: pytest.MonkeyPatch) -> None:
    from passnat.nat import table
    built = speedups.built()
    assert built is not None, "passnat._speedups is not built"
    monkeypatch.setattr(table, "_untrack", built.untrack)  # (what runs unless PASSNAT_PURE is set)
    r = passnat.Router(passnat.parse_config(CONFIG))
    gc.collect()
    assert all(gc.is_tracked(d) for d in (*r.table.out_flows.values(), *r.table.in_flows.values(),
                                          r.table.mappings))
    traffic(r)
    assert r.table.all() and not any(gc.is_tracked(s) for s in r.table.all())
    assert not any(gc.is_tracked(b) for b in r.table._wheel.values())
    r.clear_sessions()
    gc.collect()
    assert all(gc.is_tracked(d) for d in (*r.table.out_flows.values(), *r.table.in_flows.values()))


def test_pure_python_sessions_are_tracked_and_collected(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the C module the collector sees sessions as usual (nothing depends on untracking)."""
    from passnat.nat import table
    monkeypatch.setattr(table, "_untrack", None)
    r = passnat.Router(passnat.parse_config(CONFIG))
    traffic(r)
    assert all(gc.is_tracked(s) for s in r.table.all())


def test_kind_counts_and_the_vpn_index_follow_the_table() -> None:
    """What metrics and the status page read instead of walking the table stays equal to the walk."""
    from collections import Counter

    r = passnat.Router(passnat.parse_config(CONFIG))

    def check() -> None:
        live = r.table.all()
        assert Counter([(s.proto, s.kind) for s in live]) == \
            Counter(r.table.kinds)
        vpn = [s for s in live if s.proto in (47, 50, 51) or s.handler == "pptp"
               or (s.proto == 17 and (s.in_port in (500, 4500) or s.rem_port in (500, 4500)))]
        assert r.table.vpn_sessions() == vpn

    traffic(r)
    r.handle("lan0", raw(IP(src=PC1, dst=SRV) / UDP(sport=500, dport=500) / b"x"), 1.5)  # IKE
    check()
    assert r.table.vpn_sessions()
    r.on_timer(20.0)  # DNS and answered ICMP expire
    check()
    r.clear_sessions(r.table.all()[0].id)
    check()
    r.on_timer(100000.0)
    check()
    assert not r.table.kinds and not r.table.vpn_sessions()
