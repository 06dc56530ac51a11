"""Helpers shared by handlers: making sessions and their port-based flows.

Every session is made by ``make_session``: it checks the limits first (R18,
"nat session is full" logged and counted by the router), then registers the
session in the table and in the packet's ``created`` list so that a later drop
of the same packet rolls it back.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from passnat.nat.drops import Drop
from passnat.nat.flow import set_rewrites
from passnat.nat.handlers.base import Pkt
from passnat.nat.session import UR_IN, UR_OUT, Mapping, Session
from passnat.nat.table import flow_key
from passnat.packet.ipv4 import ntoa

if TYPE_CHECKING:
    from passnat.nat.router import Router

_LIMIT_TEXT = {
    Drop.SESSION_FULL: "nat session is full",
    Drop.SESSION_LIMIT_IP: "nat session is full (restricted-per-ip)",
    Drop.SESSION_LIMIT_PRIVATE_IP: "nat session is full (restricted-per-private-ip)",
}


def admit(router: Router, pkt: Pkt, private: int) -> Drop | None:
    """None when a new session may be made for ``pkt``; else the reason (logged).  A full table
    first makes room by evicting an unreplied session (``SessionTable.make_room``)."""
    table = router.table
    reason = table.admit(pkt.ip.src, private)
    if reason is Drop.SESSION_FULL:
        for _ in range(4):  # (more than one only when a reload shrank the table)
            victim = table.make_room(pkt.ip.src, private)
            if victim is None:
                break
            router.count("nat_session_evicted")
            router.log_event("nat_session_evicted", pkt.now,
                             f"nat session table full: evicted an unreplied session of {ntoa(victim.in_addr)} "
                             f"(the host with the most; {table.unreplied(victim.in_addr)} more) for "
                             f"{ntoa(pkt.ip.src)} -> {ntoa(pkt.ip.dst)} proto {pkt.ip.proto}", logging.INFO)
            reason = table.admit(pkt.ip.src, private)
            if reason is not Drop.SESSION_FULL:
                break
    if reason is not None:
        router.log_event(reason.value, pkt.now,
                         f"{_LIMIT_TEXT[reason]}: dropped {ntoa(pkt.ip.src)} -> {ntoa(pkt.ip.dst)} "
                         f"proto {pkt.ip.proto}", logging.WARNING)
    return reason


def make_session(router: Router, pkt: Pkt, *, kind: str, nat_if: str, in_addr: int, in_port: int,
                 out_addr: int, out_port: int, rem_addr: int, rem_port: int, klass: str,
                 handler: str, mapping: Mapping | None = None, ur: int = 0) -> Session:
    """Register a new session (limits must have been checked with ``admit``); ``ur``: the
    direction of the reply it awaits (``Session.ur``; 0 for sessions never evicted)."""
    s = Session(id=router.table.new_id(), proto=pkt.ip.proto, kind=kind, nat_if=nat_if,
                in_addr=in_addr, in_port=in_port, out_addr=out_addr, out_port=out_port,
                rem_addr=rem_addr, rem_port=rem_port, now=pkt.now, timeout=router.timeout(klass),
                klass=klass, origin=pkt.ip.src, handler=handler)
    s.mapping = mapping
    s.ur = ur
    router.table.add(s)
    pkt.created.append(s)
    return s


def restored_ur(s: Session) -> int:
    """``Session.ur`` of a restored session (not saved): what its timer class says -- UDP on the
    unreplied timer, TCP with its SYN unanswered, an unanswered ICMP query -- else 0 (answered:
    never evicted)."""
    unreplied = (s.klass == "udp-unreplied" or (s.proto == 6 and s.handler == "tcpudp" and s.klass == "tcp-synonly")
                 or (s.proto == 1 and s.klass == "icmp"))
    if not unreplied:
        return 0
    return UR_IN if s.kind == "napt" else UR_OUT if s.proto != 1 else 0


def restore_port_session(router: Router, s: Session, install: Callable[[Session], None]) -> bool:
    """Put back a saved port-based session: same mapping (outside port), same timers."""
    if s.out_addr != router.globals.get(s.nat_if) or router.table.admit(s.origin, s.in_addr) is not None:
        return False
    s.ur = restored_ur(s)
    if s.kind == "napt":
        m = router.table.claim_mapping(s.proto, s.nat_if, s.in_addr, s.in_port, s.out_addr, s.out_port)
        if m is None:
            return False
        s.mapping = m
    router.table.add(s)
    install(s)
    return True


def install_port_flows(router: Router, s: Session, *, slow: bool = False) -> None:
    """(Re)build both rewrites of a port-based session (TCP, UDP, ICMP query id) and index it."""
    out_hop = router.hop(s.rem_addr) or (s.nat_if, ntoa(s.rem_addr))
    in_hop = router.hop(s.in_addr)
    if in_hop is None:
        in_hop = (s.lan_if or s.nat_if, ntoa(s.in_addr))
    s.lan_if = in_hop[0]
    if s.rem_addr in router.nat_globals:
        slow = True  # hairpinned (R26): every packet needs two translations (Router._reflect)
    o_hop = (out_hop[0], out_hop[1], router.mtu(out_hop[0]), slow or s.ur == UR_OUT or out_hop[0] != s.nat_if, None)
    # an ICMP query's replies go to the slow path until the first one (it changes the timer), and
    # so does the first reply of every session that awaits one (Session.ur: timer, eviction)
    i_hop = (in_hop[0], in_hop[1], router.mtu(in_hop[0]),
             slow or s.ur == UR_IN or (s.proto == 1 and s.klass != "icmp-answered"), None)
    o_hop, i_hop = router.filter.decorate(s, o_hop, i_hop)  # filter verdicts and counters (H_FC, H_SLOW)
    set_rewrites(s, router.intern_hop(o_hop), router.intern_hop(i_hop), pseudo=s.proto != 1)
    if s.proto == 1:  # ICMP queries: the identifier in the first "port", both directions
        okey, ikey = flow_key(s.in_addr, s.rem_addr, s.in_port, 0), flow_key(s.rem_addr, s.out_addr, s.out_port, 0)
    else:
        okey = flow_key(s.in_addr, s.rem_addr, s.in_port, s.rem_port)
        ikey = flow_key(s.rem_addr, s.out_addr, s.rem_port, s.out_port)
    router.table.set_flows(s, okey, ikey)
