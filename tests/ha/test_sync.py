"""Session synchronisation (issue 12): what the master sends is what the backup holds.

The master's and the backup's engines are real ``passnat.Router`` objects fed
real packets; every message goes through JSON (as on the wire).  The backup's
view must equal the master's after a full transfer followed by incremental
updates, over random churn: new TCP/UDP/ICMP/ESP flows, TCP closing, PPTP
calls opened and cleared, dynamic NAT bindings, expiry, ``clear``.
"""
from __future__ import annotations

import json
import random
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.all import IP, TCP, raw
from scapy.layers.pptp import PPTPCallClearRequest, PPTPOutgoingCallReply, PPTPOutgoingCallRequest

import passnat
from passnat.ha import sync
from tests.nat.esp_sim import _esp
from tests.nat.helpers import BASE, PC1, PC2, PC3, SRV, WAN_ADDR, gre, make_router, one, ping, tcp, udp

EXTRA = ("nat snapt add protocol tcp listen 8080 forward 192.168.0.10 80 interface lan1\n"
         "nat dynamic add private 192.168.0.100-192.168.0.110 interface lan1\n"
         "nat dynamic add global 203.0.113.100-203.0.113.105 interface lan1\n"
         "nat timeout protocol udp 60\n"
         "filter add lan_any interface lan0 direction in/out action pass\n"
         "filter add out_ok interface lan1 direction out action pass state enable\n"
         "filter add udp_in interface lan1 direction in action pass protocol udp dst 192.168.0.12 state enable\n"
         "filter default block\n")
SERVER = "203.0.113.10"


def pair() -> tuple[passnat.Router, sync.SyncState, passnat.Router, sync.SyncState]:
    a, b = make_router(EXTRA), make_router(EXTRA, seed=2)
    sa, sb = sync.SyncState(a), sync.SyncState(b)
    sa.record(True)
    return a, sa, b, sb


def wire(obj: Any) -> Any:
    return json.loads(json.dumps(obj))


def bulk(sa: sync.SyncState, sb: sync.SyncState, now: float, clock_b: float) -> None:
    sb.apply("bulk_begin", wire({"now": now, "next_id": sa.router.table.next_id_value()}), clock_b)
    for msg in sa.bulk_messages(sa.snapshot(), now):
        sb.apply("update", wire(msg), clock_b)
    sb.apply("bulk_end", wire({"now": now}), clock_b)


def incremental(sa: sync.SyncState, sb: sync.SyncState, now: float, clock_b: float) -> None:
    while (msg := sa.take(now, limit=7)) is not None:  # small messages: changes split over several
        sb.apply("update", wire(msg), clock_b)


def view(r: passnat.Router) -> dict[str, Any]:
    """Everything the state file saves, per session id, plus the handlers' indexes."""
    sessions = {}
    for s in r.table.all():
        d = s.to_dict()
        for k in ("created", "last"):
            d.pop(k)
        info = d.get("info") or {}
        if "unpaired" in info:
            info = dict(info, unpaired=[spi for spi, _ in info["unpaired"]])
        if d["handler"] == "esp" and not any(info.values()):
            info = {}  # no SPI seen yet: None on one side, empty lists after a restore on the other
        d["info"] = info or None
        sessions[s.id] = d
    esp = r.registry.by_name("esp")
    pptp = r.registry.by_name("pptp")
    assert esp is not None and pptp is not None and r.static is not None
    groups = {k: (sorted((spi, s.id) for spi, s in g.out_spi.items() if s.alive),
                  sorted((spi, s.id) for spi, s in g.in_spi.items() if s.alive))
              for k, g in esp.groups.items()}  # type: ignore[attr-defined]
    calls = {sid: sorted((c.inside_id, c.outside_id, c.peer_id, c.state, c.gre.id if c.gre else None)
                         for c in cs) for sid, cs in pptp.calls.items() if cs}  # type: ignore[attr-defined]
    gre_in = sorted((k, c.ctrl.id) for k, c in pptp.gre_in.items())  # type: ignore[attr-defined]
    gre_out = sorted((k, c.ctrl.id) for k, c in pptp.gre_out.items())  # type: ignore[attr-defined]
    dyn = sorted((b.nat_if, b.private, b.global_) for b in r.static.bindings())
    mappings = sorted((k, m.out_addr, m.out_port) for k, m in r.table.mappings.items() if k is not None)
    states = sorted((st.key, st.rule, tuple(sorted(st.origins)), st.timer, st.fixed, st.ttl, st.klass, st.fins)
                    for st in r.filter.states.by_id.values() if st.alive)
    return {"sessions": sessions, "esp": groups, "calls": calls, "gre_in": gre_in, "gre_out": gre_out,
            "dynamic": dyn, "mappings": mappings, "filter_states": states}


def pptp_call(r: passnat.Router, host: str, sport: int, callid: int, peer: int, now: float) -> None:
    # (not one(): timers run inside handle() and may release held ESP packets with it)
    r.handle("lan0", raw(IP(src=host, dst=SERVER) / TCP(sport=sport, dport=1723, flags="S", seq=0)), now)
    r.handle("lan1", raw(IP(src=SERVER, dst=WAN_ADDR) / TCP(sport=1723, dport=sport, flags="SA", seq=0, ack=1)), now)
    ocrq = raw(IP(src=host, dst=SERVER) / TCP(sport=sport, dport=1723, flags="PA", seq=1, ack=1) /
               raw(PPTPOutgoingCallRequest(call_id=callid)))
    out = [o for o in r.handle("lan0", ocrq, now) if IP(o.packet).proto == 6]
    if not out:
        return
    wan_port = IP(out[0].packet)[TCP].sport
    out_id = PPTPOutgoingCallRequest(bytes(IP(out[0].packet)[TCP].payload)).call_id
    ocrp = raw(IP(src=SERVER, dst=WAN_ADDR) / TCP(sport=1723, dport=wan_port, flags="PA", seq=1, ack=169) /
               raw(PPTPOutgoingCallReply(call_id=peer, peer_call_id=out_id, result_code=1)))
    r.handle("lan1", ocrp, now)
    r.handle("lan1", gre(SERVER, WAN_ADDR, out_id), now)


def test_full_transfer_then_changes_equal_the_master() -> None:
    a, sa, b, sb = pair()
    one(a.handle("lan0", udp(PC1, SRV, 5000, 9000), 0.0))
    one(a.handle("lan0", udp(PC2, SRV, 5000, 9000), 0.0))  # a remapped port
    one(a.handle("lan0", tcp(PC1, SRV, 40000, 443, "S"), 0.0))
    one(a.handle("lan1", tcp(SRV, WAN_ADDR, 443, 40000, "SA"), 0.0))
    one(a.handle("lan0", ping(PC1, SRV, 33), 0.0))
    one(a.handle("lan0", _esp(PC1, SERVER, 0x11, 1, b"a"), 0.0))
    one(a.handle("lan1", _esp(SERVER, WAN_ADDR, 0x12, 1, b"a"), 0.0))
    one(a.handle("lan0", udp("192.168.0.100", SRV, 7, 7), 0.0))  # a dynamic NAT binding
    pptp_call(a, PC1, 41000, 0x1234, 0x80, 0.0)
    sa.discard()  # (changes before the connection are covered by the full transfer)
    bulk(sa, sb, 1.0, 5000.0)
    assert view(b) == view(a)
    # changes after the transfer
    one(a.handle("lan0", _esp(PC2, SERVER, 0x21, 1, b"b"), 2.0))
    one(a.handle("lan1", _esp(SERVER, WAN_ADDR, 0x22, 1, b"b"), 2.0))
    one(a.handle("lan0", tcp(PC1, SRV, 40000, 443, "FA"), 2.0))
    pptp_call(a, PC2, 41001, 0x1234, 0x81, 2.0)
    a.clear_sessions(next(s.id for s in a.table.all() if s.proto == 1))
    incremental(sa, sb, 3.0, 5002.0)
    assert view(b) == view(a)
    # the backup's copy delivers inbound traffic to the same hosts on the same ports
    sess = {(s.proto, s.in_addr, s.in_port): s for s in b.table.all()}
    assert len(sess) == len(a.table.all())
    assert one(b.handle("lan1", _esp(SERVER, WAN_ADDR, 0x22, 2, b"b"), 5003.0)).dst == PC2
    assert one(b.handle("lan1", _esp(SERVER, WAN_ADDR, 0x12, 2, b"a"), 5003.0)).dst == PC1


def test_expiry_on_the_master_removes_on_the_backup_and_the_backup_waits_for_it() -> None:
    a, sa, b, sb = pair()
    one(a.handle("lan0", udp(PC1, SRV, 5000, 9000), 0.0))
    one(a.handle("lan0", udp(PC2, SRV, 5000, 9000), 0.0))
    incremental(sa, sb, 0.0, 100.0)
    assert len(b.table) == 2
    a.handle("lan0", udp(PC1, SRV, 5000, 9000), 50.0)  # PC1's flow stays alive, PC2's idles out at 60
    a.on_timer(61.0)
    b.on_timer(161.0)  # the backup alone would keep both until 60 + MARGIN
    assert len(a.table) == 1 and len(b.table) == 2
    incremental(sa, sb, 61.0, 161.0)
    assert view(b) == view(a)
    # the expiry wheel found PC1's flow alive at 60 s: its new idle time went over too
    assert b.table.all()[0].last >= 150.0 + sync.MARGIN
    # no master at all: the backup expires on its own, MARGIN later than the master would
    b.on_timer(150.0 + 60.0 + sync.MARGIN - 0.5)
    assert len(b.table) == 1
    b.on_timer(150.0 + 60.0 + sync.MARGIN + 0.5)
    assert len(b.table) == 0


def test_takeover_restarts_idle_timers() -> None:
    a, sa, b, sb = pair()
    one(a.handle("lan0", udp(PC1, SRV, 5000, 9000), 0.0))
    incremental(sa, sb, 50.0, 50.0)
    sb.restart_timers(200.0)
    assert b.table.all()[0].remaining(200.0) == 60.0 + (sync.MARGIN - 140.0 if sync.MARGIN > 140 else 0.0)


def test_a_malformed_message_is_refused_whole() -> None:
    a, sa, b, sb = pair()
    one(a.handle("lan0", udp(PC1, SRV, 5000, 9000), 0.0))
    one(a.handle("lan0", udp(PC2, SRV, 5001, 9000), 0.0))
    msg = wire(sa.take(0.0))
    good = json.loads(json.dumps(msg))
    for field, bad in (("out_port", 70000), ("in_addr", -1), ("proto", "udp"), ("timeout", float("inf")),
                       ("handler", "evil"), ("kind", "static"), ("tcp_state", 3), ("id", True)):
        m = json.loads(json.dumps(good))
        m["s"][1][sync._F[field]] = bad
        try:
            sb.apply("update", m, 0.0)
        except sync.SyncError as e:
            assert field in str(e) or "proto" in str(e)
        else:
            raise AssertionError(f"{field}={bad!r} accepted")
        assert len(b.table) == 0, "a refused message applied nothing, not even its good first record"
    for broken in ({"now": 0.0}, {"now": "x", "next_id": 1}, {"now": 0.0, "next_id": 1, "s": [[1, 2]]},
                   {"now": 0.0, "next_id": 1, "s": "x"}, {"now": 0.0, "next_id": 1, "r": ["1"]},
                   {"now": 0.0, "next_id": 1, "d": [["lan1", 1, 2]]}, []):
        try:
            sb.apply("update", broken, 0.0)
        except sync.SyncError:
            pass
        else:
            raise AssertionError(f"{broken!r} accepted")
    sb.apply("update", good, 0.0)
    assert len(b.table) == 2


def test_a_record_that_does_not_fit_is_skipped_and_counted() -> None:
    a, sa, b, sb = pair()
    one(a.handle("lan0", udp(PC1, SRV, 5000, 9000), 0.0))
    msg = wire(sa.take(0.0))
    msg["s"][0][sync._F["nat_if"]] = "lan7"
    sb.apply("update", msg, 0.0)
    assert len(b.table) == 0 and sb.counters["ha_sync_conflicts"] == 1


# ------------------------------------------------------------------ property: random churn

HOSTS = [PC1, PC2, PC3, "192.168.0.100", "192.168.0.101"]
SERVERS = [SRV, SERVER, "203.0.113.20"]


def churn_step(r: passnat.Router, rng: random.Random, now: float, calls: list[int]) -> None:
    op = rng.randrange(12)
    host, srv = rng.choice(HOSTS), rng.choice(SERVERS)
    port = rng.choice([5000, 5001, 40000, 40001, 500])
    if op <= 2:
        r.handle("lan0", udp(host, srv, port, rng.choice([53, 9000, 500])), now)
    elif op <= 4:
        r.handle("lan0", tcp(host, srv, port, 443, rng.choice(["S", "FA", "R", "A"])), now)
    elif op == 5:
        r.handle("lan0", ping(host, srv, rng.randrange(4)), now)
    elif op == 6:
        r.handle("lan0", _esp(host, SERVER, rng.randrange(1, 6) << 8 | HOSTS.index(host), 1, b"e"), now)
    elif op == 7:
        r.handle("lan1", _esp(SERVER, WAN_ADDR, rng.randrange(1, 6) << 16, 1, b"e"), now + 0.001)
    elif op == 8 and len(calls) < 6:
        calls.append(rng.randrange(1, 60000))
        pptp_call(r, rng.choice(HOSTS[:3]), 41000 + len(calls), calls[-1], rng.randrange(1, 999), now)
    elif op == 9:
        ctrl = [s for s in r.table.all() if s.handler == "pptp" and s.info and s.info.get("pptp_calls")]
        if ctrl:
            s = rng.choice(ctrl)
            inside = s.info["pptp_calls"][0][0]  # type: ignore[index]
            ccrq = raw(IP(src=_ntoa(s.in_addr), dst=SERVER) /
                       TCP(sport=s.in_port, dport=1723, flags="PA", seq=169, ack=33) /
                       raw(PPTPCallClearRequest(call_id=inside)))
            r.handle("lan0", ccrq, now)
    elif op == 10 and rng.random() < 0.3:
        live = r.table.all()
        if live:
            r.clear_sessions(rng.choice(live).id)
    else:
        r.on_timer(now)


def _ntoa(a: int) -> str:
    return ".".join(str(a >> s & 255) for s in (24, 16, 8, 0))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), steps=st.integers(5, 120), bulk_at=st.integers(0, 120),
       batches=st.integers(1, 12))
def test_bulk_plus_incremental_equals_the_master_over_random_churn(seed: int, steps: int, bulk_at: int,
                                                                     batches: int) -> None:
    rng = random.Random(seed)
    a, sa, b, sb = pair()
    now = 0.0
    calls: list[int] = []
    connected = False
    for i in range(steps):
        now += rng.choice([0.01, 0.5, 3.0, 20.0])
        churn_step(a, rng, now, calls)
        if i == bulk_at or (not connected and i == steps - 1):
            sa.discard()  # what was noted before the connection: covered by the transfer
            bulk(sa, sb, now, now + 1000.0)
            connected = True
        elif connected and i % batches == 0:
            incremental(sa, sb, now, now + 1000.0)
    if connected:
        incremental(sa, sb, now, now + 1000.0)
    assert view(b) == view(a)
    # and the backup never expires anything the master still has
    b.on_timer(now + 1000.0)
    assert view(b)["sessions"].keys() == view(a)["sessions"].keys()


def test_a_remote_call_id_given_twice_goes_back_to_the_older_call_on_both_routers() -> None:
    """A server gives calls from two inside hosts the same Call ID (771): outbound GRE with it is
    the newer call's; when the newer call is cleared, the older call's again -- on the master, and
    on a backup filled by a full transfer (the churn property above found the two differing)."""
    a, sa, b, sb = pair()
    pptp_call(a, PC1, 41001, 100, 771, 1.0)
    pptp_call(a, PC2, 41002, 200, 771, 2.0)

    def gre_out_hosts(r: passnat.Router, now: float) -> list[str]:
        """Which inside hosts' GRE with Call ID 771 the router translates as PPTP GRE."""
        hosts = []
        for host in (PC1, PC2):
            before = r.counters().get("gre_translated", 0)
            out = r.handle("lan0", gre(host, SERVER, 771), now)
            if r.counters().get("gre_translated", 0) > before:
                assert [IP(o.packet).src for o in out] == [WAN_ADDR]
                hosts.append(host)
        return hosts

    assert gre_out_hosts(a, 3.0) == [PC2]  # the newer call holds the ID
    ctrl = next(s for s in a.table.all() if s.handler == "pptp" and _ntoa(s.in_addr) == PC2)
    a.handle("lan0", raw(IP(src=PC2, dst=SERVER) / TCP(sport=ctrl.in_port, dport=1723, flags="PA", seq=169, ack=33)
                         / raw(PPTPCallClearRequest(call_id=200))), 4.0)
    assert gre_out_hosts(a, 5.0) == [PC1]  # cleared: the older call has it back
    sa.discard()
    bulk(sa, sb, 5.0, 5.0)
    assert view(b) == view(a)
    assert gre_out_hosts(b, 6.0) == [PC1]


class _InOrder(list):  # type: ignore[type-arg]
    """A change set that pops in a chosen order (a set pops in an order of object addresses)."""

    def discard(self, x: object) -> None:
        if x in self:
            self.remove(x)


def test_a_filter_state_made_again_is_not_removed_on_the_backup_by_its_predecessor() -> None:
    """A filter state that expired and was made again under the same key: if the change set pops
    the new state's record into one message and the old one's removal into a later one, the
    backup must still end with the new state (the churn property above found it, depending on
    the order a set pops objects in)."""
    a, sa, b, sb = pair()
    one(a.handle("lan0", udp(PC1, SERVER, 5000, 53), 0.0))
    incremental(sa, sb, 0.0, 0.0)
    states = a.filter.states
    (old,) = states.by_id.values()
    a.on_timer(1000.0)  # the state and its session expire
    one(a.handle("lan0", udp(PC1, SERVER, 5000, 53), 1000.0))
    (new,) = states.by_id.values()
    assert new is not old and new.key == old.key and not old.alive
    states.changed = _InOrder([old, new])  # pop(): the new state first, the old one's removal after
    while (msg := sa.take(1000.0, limit=1)) is not None:
        sb.apply("update", wire(msg), 1000.0)
    assert view(b) == view(a)
    assert [st.key for st in b.filter.states.by_id.values()] == [new.key]


def test_a_fin_that_changes_no_tcp_state_still_reaches_the_backup() -> None:
    """A FIN after the connection was reset changes only the session's FIN mask, not its state or
    timer: the change is still sent (the churn property above found the backup without it)."""
    a, sa, b, sb = pair()
    for flags, now in (("S", 0.0), ("R", 1.0)):
        a.handle("lan0", tcp(PC1, SERVER, 40000, 443, flags), now)
    incremental(sa, sb, 1.0, 1.0)
    (s,) = a.table.all()
    state, fins = s.tcp_state, s.fins
    a.handle("lan0", tcp(PC1, SERVER, 40000, 443, "FA"), 2.0)
    assert s.tcp_state == state and s.fins != fins  # the case: only the mask moved
    incremental(sa, sb, 2.0, 2.0)
    assert view(b) == view(a)


def test_base_config_is_shared() -> None:
    assert BASE.startswith('hostname "test"')


def test_the_backup_learns_which_sessions_were_answered() -> None:
    """Eviction candidacy (issue 13) follows the master: a session answered there (its timer class
    changed) is no longer an eviction candidate on the backup; one still unanswered stays one."""
    a, b = make_router(), make_router(seed=2)
    sa, sb = sync.SyncState(a), sync.SyncState(b)
    sa.record(True)
    out = one(a.handle("lan0", udp(PC1, SRV, 5000, 9000), 0.0))
    one(a.handle("lan0", udp(PC1, SRV, 5001, 9000), 0.0))
    one(a.handle("lan0", tcp(PC1, SRV, 40000, 443, "S"), 0.0))
    incremental(sa, sb, 0.0, 100.0)
    pc1 = a.table.all()[0].in_addr
    assert b.table.unreplied(pc1) == 3 and {s.klass for s in b.table.all()} == {"udp-unreplied", "tcp-synonly"}
    one(a.handle("lan1", udp(SRV, WAN_ADDR, 9000, out.sport), 1.0))
    one(a.handle("lan1", tcp(SRV, WAN_ADDR, 443, 40000, "SA"), 1.0))
    incremental(sa, sb, 1.0, 101.0)
    assert a.table.unreplied(pc1) == b.table.unreplied(pc1) == 1
    assert sorted(s.ur for s in b.table.all()) == sorted(s.ur for s in a.table.all()) == [0, 0, 1]


def _aton(host: str) -> int:
    return int.from_bytes(bytes(int(x) for x in host.split(".")), "big")


def _in_order(sa: sync.SyncState, now: float) -> list[dict[str, Any]]:
    """Every noted change, one per message, the records of live sessions before the removals
    (an order the change set may produce: the new owner's record before the old owner's end)."""
    msgs = []
    while (m := sa.take(now, limit=1)) is not None:
        msgs.append(wire(m))
    return sorted(msgs, key=lambda m: bool(m["r"]))


def test_an_spi_bound_again_on_the_master_moves_on_the_backup_whatever_the_order() -> None:
    a, sa, b, sb = pair()
    one(a.handle("lan0", _esp(PC1, SERVER, 0x11, 1, b"a"), 0.0))
    one(a.handle("lan1", _esp(SERVER, WAN_ADDR, 0x12, 1, b"a"), 0.0))  # inbound 0x12: PC1's
    one(a.handle("lan0", _esp(PC2, SERVER, 0x21, 1, b"b"), 0.0))
    one(a.handle("lan1", _esp(SERVER, WAN_ADDR, 0x22, 1, b"b"), 0.0))
    incremental(sa, sb, 0.0, 0.0)
    assert view(b) == view(a)
    a.clear_sessions(next(s.id for s in a.table.all() if s.proto == 50 and s.in_addr == _aton(PC1)))
    one(a.handle("lan0", _esp(PC2, SERVER, 0x31, 1, b"b"), 1.0))  # PC2's next SA
    assert one(a.handle("lan1", _esp(SERVER, WAN_ADDR, 0x12, 2, b"b"), 1.0)).dst == PC2  # 0x12 now PC2's
    for m in _in_order(sa, 1.0):
        sb.apply("update", m, 1.0)
    assert view(b) == view(a)
    assert one(b.handle("lan1", _esp(SERVER, WAN_ADDR, 0x12, 3, b"b"), 2.0)).dst == PC2


def test_a_call_id_handed_out_again_on_the_master_moves_on_the_backup_whatever_the_order() -> None:
    a, sa, b, sb = pair()
    pptp_call(a, PC1, 41000, 0x1234, 0x80, 0.0)
    incremental(sa, sb, 0.0, 0.0)
    ctrl = next(s for s in a.table.all() if s.handler == "pptp")
    a.clear_sessions(ctrl.id)
    pptp_call(a, PC2, 41001, 0x1234, 0x81, 1.0)  # the same outside Call ID again, now PC2's
    assert view(a)["calls"] and view(a)["gre_in"]
    for m in _in_order(sa, 1.0):
        sb.apply("update", m, 1.0)
    assert view(b) == view(a)
    assert sb.counters["ha_sync_conflicts"] == 0
