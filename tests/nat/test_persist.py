"""Sessions survive a restart (R19, B2): export, JSON, import into a new router."""
from __future__ import annotations

import json

from scapy.all import IP, TCP, UDP, raw
from scapy.layers.pptp import PPTPOutgoingCallReply, PPTPOutgoingCallRequest

import passnat
from tests.nat.esp_sim import _esp
from tests.nat.helpers import BASE, PC1, PC2, SRV, WAN_ADDR, gre, gre_call_id, make_router, one, ping, tcp, udp

EXTRA = ("nat snapt add protocol tcp listen 8080 forward 192.168.0.10 80 interface lan1\n"
         "nat timeout protocol udp 300\n")
SERVER = "203.0.113.10"


def restart(r: passnat.Router, now: float, later: float, elapsed: float) -> passnat.Router:
    state = json.loads(json.dumps(r.export_state(now)))  # it must survive JSON
    new = make_router(EXTRA)
    new.import_state(state, later, elapsed=elapsed)
    return new


def test_sessions_of_every_kind_survive_a_restart() -> None:
    r = make_router(EXTRA)
    # UDP with a port collision (PC2 got a remapped port), TCP established, ICMP, SNAPT
    one(r.handle("lan0", udp(PC1, SRV, 5000, 9000), 0.0))
    b = one(r.handle("lan0", udp(PC2, SRV, 5000, 9000), 0.0))
    one(r.handle("lan0", tcp(PC1, SRV, 40000, 443, "S"), 0.0))
    one(r.handle("lan1", tcp(SRV, WAN_ADDR, 443, 40000, "SA"), 0.0))
    one(r.handle("lan0", ping(PC1, SRV, 33), 0.0))
    one(r.handle("lan1", tcp(SRV, WAN_ADDR, 777, 8080, "S"), 0.0))
    # ESP from two hosts to one server, paired
    one(r.handle("lan0", _esp(PC1, SERVER, 0x11, 1, b"a"), 0.0))
    one(r.handle("lan1", _esp(SERVER, WAN_ADDR, 0x12, 1, b"a"), 0.0))
    one(r.handle("lan0", _esp(PC2, SERVER, 0x21, 1, b"b"), 0.0))
    one(r.handle("lan1", _esp(SERVER, WAN_ADDR, 0x22, 1, b"b"), 0.0))
    # a PPTP call
    c = [raw(IP(src=PC1, dst=SERVER) / TCP(sport=41000, dport=1723, flags="S", seq=0)),
         raw(IP(src=SERVER, dst=WAN_ADDR) / TCP(sport=1723, dport=41000, flags="SA", seq=0, ack=1))]
    one(r.handle("lan0", c[0], 0.0))
    one(r.handle("lan1", c[1], 0.0))
    ocrq = raw(IP(src=PC1, dst=SERVER) / TCP(sport=41000, dport=1723, flags="PA", seq=1, ack=1) /
               raw(PPTPOutgoingCallRequest(call_id=0x1234)))
    one(r.handle("lan0", ocrq, 0.0))
    ocrp = raw(IP(src=SERVER, dst=WAN_ADDR) / TCP(sport=1723, dport=41000, flags="PA", seq=1, ack=169) /
               raw(PPTPOutgoingCallReply(call_id=0x80, peer_call_id=0x1234, result_code=1)))
    one(r.handle("lan1", ocrp, 0.0))
    one(r.handle("lan1", gre(SERVER, WAN_ADDR, 0x1234), 0.0))
    before = {(s["protocol"], s["inside"], s["inside_port"], s["outside_port"]) for s in r.sessions(100.0)}

    r2 = restart(r, 100.0, later=5000.0, elapsed=60.0)
    after = {(s["protocol"], s["inside"], s["inside_port"], s["outside_port"]) for s in r2.sessions(5000.0)}
    assert after == before
    # timers: idle 100 s before the stop + 60 s down
    udp_left = sorted(s["remaining"] for s in r2.sessions(5000.0) if s["protocol"] == "udp")
    assert udp_left == [140.0, 140.0]
    # inbound traffic reaches the same hosts, on the same outside ports
    assert one(r2.handle("lan1", udp(SRV, WAN_ADDR, 9000, b[UDP].sport), 5001.0)).dst == PC2
    assert one(r2.handle("lan1", udp(SRV, WAN_ADDR, 9000, 5000), 5001.0)).dst == PC1
    assert one(r2.handle("lan1", tcp(SRV, WAN_ADDR, 443, 40000, "A", b"data"), 5001.0)).dst == PC1
    assert one(r2.handle("lan1", ping(SRV, WAN_ADDR, 33, reply=True), 5001.0)).dst == PC1
    assert one(r2.handle("lan0", tcp("192.168.0.10", SRV, 80, 777, "SA"), 5001.0))[TCP].sport == 8080
    assert one(r2.handle("lan1", _esp(SERVER, WAN_ADDR, 0x22, 2, b"b"), 5001.0)).dst == PC2
    assert one(r2.handle("lan1", _esp(SERVER, WAN_ADDR, 0x12, 2, b"a"), 5001.0)).dst == PC1
    g = r2.handle("lan1", gre(SERVER, WAN_ADDR, 0x1234), 5001.0)
    assert IP(g[0].packet).dst == PC1 and gre_call_id(g[0].packet) == 0x1234
    # new sessions do not reuse restored ids or ports
    n = one(r2.handle("lan0", udp("192.168.0.13", SRV, 5000, 9000), 5002.0))
    assert n[UDP].sport not in (5000, b[UDP].sport)
    ids = [s["id"] for s in r2.sessions(5002.0)]
    assert len(ids) == len(set(ids))


def test_sessions_whose_timer_ran_out_during_the_restart_are_not_restored() -> None:
    r = make_router(EXTRA)
    one(r.handle("lan0", udp(PC1, SRV, 5000, 9000), 0.0))  # 300 s timer
    one(r.handle("lan0", tcp(PC1, SRV, 40000, 443, "S"), 0.0))  # 900 s (tcp-synonly default)
    r2 = restart(r, 200.0, later=0.0, elapsed=150.0)
    assert [s["protocol"] for s in r2.sessions(0.0)] == ["tcp"]
    assert r2.counters()["state_sessions_expired_or_invalid"] == 1


def test_import_into_a_config_without_that_nat_interface_skips_sessions() -> None:
    r = make_router()
    one(r.handle("lan0", udp(PC1, SRV, 5000, 9000), 0.0))
    new = passnat.Router(passnat.parse_config(BASE.replace("nat napt add private 192.168.0.0-192.168.0.255 "
                                                           "interface lan1\n", "")))
    assert new.import_state(r.export_state(1.0), 1.0) == 0


# ---------------------------------------------------------------- validation (issue 13 §4)

import copy  # noqa: E402
import math  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from passnat.control.format import format_status_nat  # noqa: E402
from passnat.control.views import status_nat  # noqa: E402
from passnat.nat import persist  # noqa: E402
from passnat.nat.persist import StateError  # noqa: E402
from passnat.nat.session import Session  # noqa: E402


def busy_router() -> passnat.Router:
    """A router with a session of every handler: UDP, TCP, ICMP, SNAPT, ESP, a PPTP call and its GRE."""
    r = make_router(EXTRA)
    one(r.handle("lan0", udp(PC1, SRV, 5000, 9000), 0.0))
    one(r.handle("lan0", tcp(PC1, SRV, 40000, 443, "S"), 0.0))
    one(r.handle("lan1", tcp(SRV, WAN_ADDR, 443, 40000, "SA"), 0.0))
    one(r.handle("lan0", ping(PC1, SRV, 33), 0.0))
    one(r.handle("lan1", tcp(SRV, WAN_ADDR, 777, 8080, "S"), 0.0))
    one(r.handle("lan0", _esp(PC1, SERVER, 0x11, 1, b"a"), 0.0))
    one(r.handle("lan1", _esp(SERVER, WAN_ADDR, 0x12, 1, b"a"), 0.0))
    one(r.handle("lan0", raw(IP(src=PC2, dst=SERVER) / TCP(sport=41000, dport=1723, flags="S", seq=0)), 0.0))
    one(r.handle("lan1", raw(IP(src=SERVER, dst=WAN_ADDR) / TCP(sport=1723, dport=41000, flags="SA", seq=0, ack=1)), 0.0))
    one(r.handle("lan0", raw(IP(src=PC2, dst=SERVER) / TCP(sport=41000, dport=1723, flags="PA", seq=1, ack=1) /
                             raw(PPTPOutgoingCallRequest(call_id=0x1234))), 0.0))
    one(r.handle("lan1", raw(IP(src=SERVER, dst=WAN_ADDR) / TCP(sport=1723, dport=41000, flags="PA", seq=1, ack=169) /
                             raw(PPTPOutgoingCallReply(call_id=0x80, peer_call_id=0x1234, result_code=1))), 0.0))
    one(r.handle("lan1", gre(SERVER, WAN_ADDR, 0x1234), 0.0))
    return r


def saved() -> dict[str, Any]:
    state = json.loads(json.dumps(busy_router().export_state(100.0)))
    assert {s["handler"] for s in state["sessions"]} == {"tcpudp", "icmp", "esp", "pptp", "pptp-gre"}
    return state


def by_handler(state: dict[str, Any], handler: str) -> dict[str, Any]:
    return next(s for s in state["sessions"] if s["handler"] == handler)


def assert_untouched(r: passnat.Router) -> None:
    assert r.sessions(0.0) == [] and len(r.table) == 0
    assert format_status_nat(status_nat(r, 0.0))  # the operator's view still works
    assert r.counters().get("state_sessions_restored", 0) == 0
    esp, pptp = r.registry.by_name("esp"), r.registry.by_name("pptp")
    assert not esp.groups and not pptp.calls and not pptp.gre_in  # type: ignore[union-attr]


def test_every_saved_field_has_a_validator() -> None:
    assert set(Session._SAVED) == set(persist._FIELDS)


BAD_FIELDS = [
    ("tcpudp", "in_port", "5000"), ("tcpudp", "in_port", 70000), ("tcpudp", "in_port", -1), ("tcpudp", "in_port", True),
    ("tcpudp", "in_port", 5000.0), ("tcpudp", "in_addr", 1 << 32), ("tcpudp", "in_addr", "192.168.0.11"),
    ("tcpudp", "out_addr", None), ("tcpudp", "rem_addr", -5), ("tcpudp", "origin", [1]),
    ("tcpudp", "proto", 256), ("tcpudp", "proto", False), ("tcpudp", "proto", 50),
    ("tcpudp", "id", 0), ("tcpudp", "id", "7"), ("tcpudp", "kind", "static"), ("tcpudp", "nat_if", 3),
    ("tcpudp", "nat_if", ""), ("tcpudp", "created", "yesterday"), ("tcpudp", "last", 1e9),
    ("tcpudp", "timeout", 0), ("tcpudp", "timeout", -10), ("tcpudp", "timeout", 1e300), ("tcpudp", "timeout", "900"),
    ("tcpudp", "klass", "forever"), ("tcpudp", "klass", "__class__"), ("tcpudp", "klass", "get"), ("tcpudp", "klass", 3),
    ("tcpudp", "tcp_state", 2), ("tcpudp", "fins", 9), ("tcpudp", "handler", "nosuch"), ("tcpudp", "handler", "esp"),
    ("tcpudp", "info", {"x": 1}), ("tcpudp", "info", "text"),
    ("pptp", "tcp_state", 0), ("pptp", "tcp_state", 7), ("pptp", "info", {"pptp_calls": [[1, 2, 3]]}),
    ("pptp", "info", {"pptp_calls": [[1, 2, 3, "dancing"]]}), ("pptp", "info", {"pptp_calls": [[1, 70000, None, "opening"]]}),
    ("pptp", "info", {"pptp_calls": "none"}),
    ("esp", "info", None), ("esp", "info", {"out_spis": [1 << 32], "in_spis": [], "unpaired": [], "pairs": []}),
    ("esp", "info", {"out_spis": ["0x11"], "in_spis": [], "unpaired": [], "pairs": []}),
    ("esp", "info", {"out_spis": [], "in_spis": [], "unpaired": [[1, "now"]], "pairs": []}),
    ("esp", "info", {"out_spis": [], "in_spis": [], "unpaired": [], "pairs": [[1]]}),
    ("esp", "info", {"in_spis": [], "unpaired": [], "pairs": []}),
    ("pptp-gre", "info", None), ("pptp-gre", "info", {"call": [1, 2, None, 0]}), ("pptp-gre", "info", {"call": [1, 2]}),
    ("icmp", "tcp_state", 1), ("icmp", "proto", 6),
]


@pytest.mark.parametrize(("handler", "field", "value"), BAD_FIELDS)
def test_a_bad_field_anywhere_rejects_the_whole_state(handler: str, field: str, value: Any) -> None:
    state = saved()
    by_handler(state, handler)[field] = value
    state["sessions"].reverse()  # the bad record is not the first: nothing before it may stay either
    r = make_router(EXTRA)
    with pytest.raises(StateError) as e:
        r.import_state(state, 5000.0, elapsed=1.0)
    assert "state.sessions[" in str(e.value) and "\n" not in str(e.value)
    assert_untouched(r)


@pytest.mark.parametrize("mutate", [
    lambda s: s.__setitem__("now", math.nan), lambda s: s.__setitem__("now", math.inf),
    lambda s: s.__setitem__("now", "later"), lambda s: s.__setitem__("version", 2),
    lambda s: s.__setitem__("sessions", {"a": 1}), lambda s: s.__setitem__("next_id", -1),
    lambda s: s.__setitem__("dynamic", [["lan1", 1, 2]]), lambda s: s.__setitem__("dynamic", [["lan1", 1, 2, math.inf]]),
    lambda s: s["sessions"].append(copy.deepcopy(s["sessions"][0])),  # the same id twice
    lambda s: s["sessions"][1].__setitem__("last", math.nan),
    lambda s: s["sessions"].append(s["sessions"][0] | {"id": 999}),  # a second session for one flow
    lambda s: s["sessions"].append("not a session"),
    lambda s: s["sessions"][0].pop("klass"),
])
def test_malformed_state_documents_are_rejected(mutate: Any) -> None:
    state = saved()
    mutate(state)
    r = make_router(EXTRA)
    with pytest.raises(StateError):
        r.import_state(state, 5000.0)
    assert_untouched(r)
    with pytest.raises(StateError):
        r.import_state(["not", "a", "state"], 5000.0)  # type: ignore[arg-type]


def test_a_failing_restore_rolls_back_every_session(monkeypatch: pytest.MonkeyPatch) -> None:
    """Should a handler still fail after validation, what was restored is removed again."""
    r = make_router(EXTRA)
    esp = r.registry.by_name("esp")
    real = esp.restore  # type: ignore[union-attr]

    def broken(s: Session) -> bool:
        real(s)
        raise RuntimeError("disk on fire")
    monkeypatch.setattr(esp, "restore", broken)
    with pytest.raises(StateError, match="nothing was imported"):
        r.import_state(saved(), 5000.0)
    assert_untouched(r)
    assert len(r.table.pool(17, persist_addr(WAN_ADDR)).used) == 0  # the UDP mapping's port is free again


def persist_addr(text: str) -> int:
    return int.from_bytes(bytes(int(x) for x in text.split(".")), "big")


def test_sessions_that_no_longer_fit_the_configuration_are_skipped_not_rejected() -> None:
    state = saved()
    outsider = copy.deepcopy(by_handler(state, "tcpudp"))
    outsider.update(id=500, in_addr=persist_addr("10.9.9.9"), origin=persist_addr("10.9.9.9"))
    state["sessions"].append(outsider)
    r = make_router(EXTRA)
    n = r.import_state(state, 5000.0)
    assert n == len(state["sessions"]) - 1
    assert r.counters()["state_sessions_expired_or_invalid"] == 1
    assert "10.9.9.9" not in {s["inside"] for s in r.sessions(5000.0)}


JSON = st.recursive(st.none() | st.booleans() | st.integers(-(1 << 40), 1 << 40) | st.floats(allow_nan=True)
                    | st.text(max_size=8), lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=6), kids, max_size=3),
                    max_leaves=6)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_mutation_is_imported_whole_or_rejected_whole(data: st.DataObject) -> None:
    """Fuzz: replace any field of any record (or a nested value) with any JSON value; the import
    either works, leaving a router whose views and export work, or raises StateError leaving it empty."""
    state = saved()
    i = data.draw(st.integers(0, len(state["sessions"]) - 1))
    rec = state["sessions"][i]
    field = data.draw(st.sampled_from(sorted(rec)))
    rec[field] = data.draw(JSON | st.integers(0, 70000))
    r = make_router(EXTRA)
    try:
        r.import_state(state, 5000.0, elapsed=3.0)
    except StateError:
        assert_untouched(r)
        return
    format_status_nat(status_nat(r, 5000.0))
    r.diagnose(5000.0)
    json.dumps(r.export_state(5001.0), allow_nan=False)
    r.on_timer(5000.0 + persist.MAX_TIMEOUT + 10)  # everything expires cleanly, the longest valid timer too
    assert len(r.table) == 0
