"""One log line per notable event kind, from a real engine's counters."""
from __future__ import annotations

import logging

import pytest
from scapy.all import IP, UDP, raw  # type: ignore[attr-defined]

import passnat
from passnat.service.events import EventLog

CONFIG = """\
interface lan0 add 192.168.0.1/24
interface lan1 add 203.0.113.1/24
nat napt add private 192.168.0.0-192.168.0.255 interface lan1
nat session maximum 2
nat session restricted-per-private-ip 100
"""


def ctx(r: passnat.Router) -> dict[str, object]:
    return {"sessions": len(r.table), "maximum": r.config.nat.session.maximum,
            "esp_mode": r.config.nat.esp_mode.value}


def udp(sport: int) -> bytes:
    return raw(IP(src="192.168.0.11", dst="203.0.113.10") / UDP(sport=sport, dport=53) / b"q")


def test_table_full_and_ah_each_give_one_line_then_a_repeat_later(caplog: pytest.LogCaptureFixture) -> None:
    r = passnat.Router(passnat.parse_config(CONFIG), seed=1)
    ev = EventLog(repeat=60.0)
    assert ev.check(r.counters(), 0.0, ctx(r)) == []  # the baseline
    caplog.set_level(logging.WARNING, logger="passnat.events")
    r.handle("lan0", raw(IP(src="192.168.0.11", dst="203.0.113.10", proto=51) / (b"\0" * 24)), 1.0)
    r.handle("lan0", udp(5000), 1.0)
    r.handle("lan1", raw(IP(src="203.0.113.10", dst="203.0.113.1") / UDP(sport=53, dport=5000) / b"a"), 1.0)
    for port in range(5001, 5010):  # the table is full of sessions that are never evicted (AH, answered)
        r.handle("lan0", udp(port), 1.0)
    lines = ev.check(r.counters(), 1.0, ctx(r))
    assert len(lines) == 2, lines
    assert lines[0].startswith("nat session table full: 9 new session(s) refused (nat_session_full +9; 2 of maximum 2")
    assert lines[1].startswith("IPsec AH seen: 1 packet(s)")
    assert [rec.getMessage() for rec in caplog.records if rec.name == "passnat.events"] == lines
    for port in range(6000, 6020):
        r.handle("lan0", udp(port), 2.0)
    assert ev.check(r.counters(), 2.0, ctx(r)) == []  # within the minute: counted, not logged
    assert ev.check(r.counters(), 30.0, ctx(r)) == []
    later = ev.check(r.counters(), 61.5, ctx(r))
    assert later == [later[0]] and "20 new session(s) refused" in later[0]
    assert ev.check(r.counters(), 200.0, ctx(r)) == []  # nothing new


def test_evictions_give_one_line() -> None:
    r = passnat.Router(passnat.parse_config(CONFIG), seed=1)
    ev = EventLog(repeat=60.0)
    ev.check(r.counters(), 0.0, ctx(r))
    for port in range(5000, 5012):  # unanswered: each new one evicts the oldest
        assert r.handle("lan0", udp(port), 1.0)
    lines = ev.check(r.counters(), 1.0, ctx(r))
    assert lines == ["nat session table full: 10 unreplied session(s) evicted to make room (nat_session_evicted +10; "
                     "2 of maximum 2 in use); `passnat show status nat` shows the host holding the most"], lines


def test_esp_sharing_is_not_contention_in_spi_mode_but_is_in_first_come() -> None:
    for mode, expect in (("spi", 0), ("first-come", 1)):
        r = passnat.Router(passnat.parse_config(CONFIG.replace("nat session maximum 2\n", "") +
                                                f"nat option esp-passthrough {mode}\n"), seed=1)
        ev = EventLog()
        ev.check(r.counters(), 0.0, ctx(r))
        for i, host in enumerate(("192.168.0.11", "192.168.0.12")):
            spi = (0x1001 + i).to_bytes(4, "big")
            esp = IP(src=host, dst="203.0.113.10", proto=50) / (spi + b"\x00\x00\x00\x01" + b"x" * 32)
            r.handle("lan0", raw(esp), 1.0)
        lines = ev.check(r.counters(), 1.0, ctx(r))
        assert len(lines) == expect, (mode, lines)
        if expect:
            assert lines[0].startswith("ESP contention: esp_shared_remote +1 (esp-passthrough first-come)")
