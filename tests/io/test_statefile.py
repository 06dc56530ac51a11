"""--state-file: sessions saved at stop and restored at start, downtime counted as idle time."""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from scapy.all import IP, UDP, raw  # type: ignore[attr-defined]

import passnat
from passnat.io import statefile

CONFIG = """\
interface lan0 add 192.168.0.1/24
interface lan1 add 203.0.113.1/24
nat napt add private 192.168.0.0-192.168.0.255 interface lan1
nat timeout protocol udp 300
"""


def router_with_flow(now: float) -> passnat.Router:
    r = passnat.Router(passnat.parse_config(CONFIG, "t.conf"), seed=3)
    r.handle("lan0", raw(IP(src="192.168.0.11", dst="203.0.113.10") / UDP(sport=4500, dport=4500) / b"x"), now)
    return r


def test_round_trip_keeps_mapping_and_counts_downtime(tmp_path: Path) -> None:
    path = str(tmp_path / "state.json")
    old = router_with_flow(now=1000.0)
    before = old.sessions(1100.0)[0]
    assert statefile.save(path, old, clock=lambda: 1100.0)  # idle 100 s of 300 s
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    doc = json.loads(Path(path).read_text())
    doc["saved_wall"] -= 60.0  # as if passnat had been down for 60 s
    Path(path).write_text(json.dumps(doc))
    new = passnat.Router(passnat.parse_config(CONFIG, "t.conf"))
    assert statefile.load(path, new, clock=lambda: 5.0) == 1  # another clock base entirely
    after = new.sessions(5.0)[0]
    assert (after["inside"], after["inside_port"], after["outside_port"]) == (
        before["inside"], before["inside_port"], before["outside_port"])
    assert 139.0 <= after["remaining"] <= 141.0  # 300 - 100 idle - 60 down
    # the restored mapping translates the server's reply
    reply = raw(IP(src="203.0.113.10", dst="203.0.113.1") / UDP(sport=4500, dport=before["outside_port"]))
    outs = new.handle("lan1", reply, 6.0)
    assert outs and IP(outs[0].packet).dst == "192.168.0.11"


def test_expired_during_downtime_not_restored(tmp_path: Path) -> None:
    path = str(tmp_path / "state.json")
    assert statefile.save(path, router_with_flow(now=0.0), clock=lambda: 0.0)
    doc = json.loads(Path(path).read_text())
    doc["saved_wall"] -= 400.0
    Path(path).write_text(json.dumps(doc))
    new = passnat.Router(passnat.parse_config(CONFIG, "t.conf"))
    assert statefile.load(path, new, clock=lambda: 0.0) == 0
    assert new.sessions(0.0) == []


def test_missing_or_bad_files_are_ignored(tmp_path: Path) -> None:
    r = passnat.Router(passnat.parse_config(CONFIG, "t.conf"))
    assert statefile.load(str(tmp_path / "absent.json"), r) is None
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert statefile.load(str(bad), r) is None
    bad.write_text(json.dumps({"format": "other"}))
    assert statefile.load(str(bad), r) is None
    bad.write_text(json.dumps({"format": "passnat-state", "version": 1, "saved_wall": 0, "state": {"version": 99}}))
    assert statefile.load(str(bad), r) is None  # the engine refuses it: logged, not raised


def test_save_failure_reported(tmp_path: Path) -> None:
    assert not statefile.save(str(tmp_path / "no-such-dir" / "s.json"), router_with_flow(0.0))
