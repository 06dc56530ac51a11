"""The scenario verdicts themselves (no lab needed): they fail on the faults they exist to catch."""
from __future__ import annotations

from typing import Any

from passnat.lab.scenarios import esp, pptp
from passnat.lab.scenarios.base import Check, session_blocks


def client(**kw: Any) -> dict[str, Any]:
    r = {"name": "pc2", "algo": "cbc", "sent": 12, "ok": 12, "foreign": {}, "bad": 0}
    r.update(kw)
    return r


def test_esp_clean_needs_replies_and_rejects_any_foreign_packet() -> None:
    assert esp.clean(client())
    assert not esp.clean(client(foreign={"0x1002": 1}))
    assert not esp.clean(client(bad=1))
    assert not esp.clean(client(ok=8))
    assert esp.clean(client(ok=9))


def pptp_client(**kw: Any) -> dict[str, Any]:
    r = {"tag": "pc1", "sent_req": 13, "got_rep": 13, "got_req": 12, "foreign_rep": 0, "reply_span_s": 11.0}
    r.update(kw)
    return r


SERVERS = [{"got_rep": 12, "peer_tags": {"pc1": 12}}, {"got_rep": 12, "peer_tags": {"pc2": 12}}]


def test_pptp_judge_passes_a_clean_call() -> None:
    assert pptp.judge("pc1", pptp_client(), SERVERS, 13.0, 10.0).ok


def test_pptp_judge_fails_crossed_short_or_one_way_calls() -> None:
    assert not pptp.judge("pc1", pptp_client(foreign_rep=1), SERVERS, 13.0, 10.0).ok
    assert not pptp.judge("pc1", pptp_client(reply_span_s=6.0), SERVERS, 13.0, 10.0).ok
    assert not pptp.judge("pc1", pptp_client(got_req=0), SERVERS, 13.0, 10.0).ok
    mixed = [{"got_rep": 12, "peer_tags": {"pc1": 6, "pc2": 6}}]
    assert not pptp.judge("pc1", pptp_client(), mixed, 13.0, 10.0).ok
    assert not pptp.judge("pc1", pptp_client(), [], 13.0, 10.0).ok


def test_check_all_fails_when_one_part_fails() -> None:
    c = Check.all([("a", Check(True, "fine")), ("b", Check(False, "broken"))])
    assert not c.ok and "b: FAILED" in c.summary


def test_session_blocks_keep_spi_lines_with_their_session() -> None:
    lines = ["   1:napt  lan1     esp    192.168.0.11 = 203.0.113.1 <-> 203.0.113.10 [00:14:58]",
             "          esp: mode spi, paired; inbound SPI 0x00001002 -> 192.168.0.11",
             "   2:napt  lan1     udp    192.168.0.12:5 = 203.0.113.1:5 <-> 203.0.113.10:9 [00:14:58]",
             "udp      17 29 src=192.168.0.11 dst=203.0.113.10"]
    assert [len(b) for b in session_blocks(lines)] == [2, 1, 1]
