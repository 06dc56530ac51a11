"""--state-file: sessions saved at stop and restored at start, downtime counted as idle time."""
from __future__ import annotations

import json
import logging
import os
import signal
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from scapy.all import IP, UDP, raw  # type: ignore[attr-defined]

import passnat
from passnat.control.format import format_status_nat
from passnat.control.views import status_nat
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


def test_missing_file_is_a_first_start(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    r = passnat.Router(passnat.parse_config(CONFIG, "t.conf"))
    with caplog.at_level(logging.INFO, "passnat.io.state"):
        assert statefile.load(str(tmp_path / "absent.json"), r) is None
    assert [rec.levelname for rec in caplog.records] == ["INFO"] and "does not exist yet" in caplog.text


def test_save_failure_reported(tmp_path: Path) -> None:
    assert not statefile.save(str(tmp_path / "no-such-dir" / "s.json"), router_with_flow(0.0))


# ---------------------------------------------------------------- rejected files (issue 13 §4, issue 11 point 3)


def good_document(tmp_path: Path) -> dict[str, Any]:
    path = str(tmp_path / "good.json")
    assert statefile.save(path, router_with_flow(now=0.0), clock=lambda: 10.0)
    doc: dict[str, Any] = json.loads(Path(path).read_text())
    return doc


def _session_field(field: str, value: Any) -> Callable[[dict[str, Any]], Any]:
    def mutate(doc: dict[str, Any]) -> Any:
        doc["state"]["sessions"][0][field] = value
        return doc
    return mutate


def _replaced(text: str, old: str, new: str) -> str:
    assert old in text
    return text.replace(old, new)


CORRUPT: dict[str, Callable[[dict[str, Any]], Any]] = {
    "wrong types": _session_field("in_port", "4500"),
    "wrong type, nested": _session_field("proto", [17]),
    "NaN time": _session_field("last", float("nan")),
    "infinite timer": _session_field("timeout", float("inf")),
    "huge number": lambda d: _replaced(json.dumps(d, separators=(",", ":")), '"timeout":300.0', '"timeout":1e999'),
    "truncated": lambda d: json.dumps(d)[:len(json.dumps(d)) // 2],
    "binary": lambda d: bytes(range(256)) * 4,
    "empty": lambda d: b"",
    "not a state file": lambda d: {"format": "something-else"},
    "future version": lambda d: d | {"version": 7},
    "NaN save time": lambda d: d | {"saved_wall": float("nan")},
    "deeply nested": lambda d: "[" * 100_000 + "]" * 100_000,
    "engine state of the wrong type": lambda d: d | {"state": [1, 2, 3]},
}


def write_raw(path: Path, content: Any) -> None:
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, str):
        path.write_text(content)
    else:
        path.write_text(json.dumps(content))  # NaN/Infinity as Python's json writes them


@pytest.mark.parametrize("kind", sorted(CORRUPT))
def test_corrupt_files_are_moved_aside_with_one_line_and_a_clean_start(
        kind: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "state.json"
    write_raw(path, CORRUPT[kind](good_document(tmp_path)))
    content = path.read_bytes()
    r = passnat.Router(passnat.parse_config(CONFIG, "t.conf"))
    caplog.clear()
    with caplog.at_level(logging.DEBUG, "passnat"):
        assert statefile.load(str(path), r, clock=lambda: 50.0) is None
    errors = [rec for rec in caplog.records if rec.levelno >= logging.WARNING]
    assert len(errors) == 1 and not errors[0].exc_info, caplog.text
    line = errors[0].getMessage()
    assert "rejected" in line and "state.json.rejected" in line and "starting without saved sessions" in line
    assert "\n" not in line
    assert not path.exists() and (tmp_path / "state.json.rejected").read_bytes() == content
    assert r.sessions(50.0) == [] and len(r.table) == 0
    assert format_status_nat(status_nat(r, 50.0)).startswith("List of active IP mapping")
    # the next save writes a good file again, which loads
    assert statefile.save(str(path), router_with_flow(now=40.0), clock=lambda: 50.0)
    assert statefile.load(str(path), passnat.Router(passnat.parse_config(CONFIG, "t.conf")), clock=lambda: 60.0) == 1


def test_leftovers_of_an_interrupted_save_are_removed(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    (tmp_path / "state.json.tmp12345").write_text("{half")
    (tmp_path / "state.json.tmpfoo").write_text("not ours")
    statefile.load(str(path), passnat.Router(passnat.parse_config(CONFIG, "t.conf")))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json.tmpfoo"]


def test_an_orphaned_save_child_does_not_replace_the_file(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text("previous")
    with pytest.raises(OSError, match="successor"):
        statefile.write(str(path), {"x": 1}, parent=os.getpid() + 1_000_000)
    assert path.read_text() == "previous" and [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_nan_in_the_engine_is_never_written(tmp_path: Path) -> None:
    r = router_with_flow(now=0.0)
    r.table.all()[0].last = float("nan")
    path = tmp_path / "state.json"
    path.write_text("previous")
    assert not statefile.save(str(path), r, clock=lambda: 1.0)
    assert path.read_text() == "previous"


# ---------------------------------------------------------------- the schedule (Saver)


def wait_child(saver: statefile.Saver, router: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while saver.child is not None and time.monotonic() < deadline:
        saver.tick(router, lambda: 1.0)
        time.sleep(0.02)
    assert saver.child is None


def test_periodic_and_sighup_saves_run_in_a_child(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    r = router_with_flow(now=0.0)
    saver = statefile.Saver(str(path), interval=3600.0)
    saver.tick(r, lambda: 1.0)
    assert saver.child is None and not path.exists()  # not due yet
    saver.next_due = 0.0  # the interval has passed
    saver.tick(r, lambda: 1.0)
    child = saver.child
    assert child is not None and child != os.getpid()
    wait_child(saver, r)
    assert saver.saves == 1 and statefile.load(str(path), passnat.Router(passnat.parse_config(CONFIG))) == 1
    assert saver.next_due > time.monotonic() + 3000  # the next one an interval later
    r.handle("lan0", raw(IP(src="192.168.0.12", dst="203.0.113.10") / UDP(sport=9, dport=9)), 0.5)
    saver.request()  # SIGHUP
    saver.tick(r, lambda: 1.0)
    wait_child(saver, r)
    assert saver.saves == 2 and statefile.load(str(path), passnat.Router(passnat.parse_config(CONFIG))) == 2


def test_a_hung_save_child_is_killed_and_the_stop_save_still_happens(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "state.json"
    r = router_with_flow(now=0.0)
    real_write = statefile.write

    def slow_write(*args: Any, **kw: Any) -> None:  # only the forked child sleeps
        time.sleep(30)
        real_write(*args, **kw)
    monkeypatch.setattr(statefile, "write", slow_write)
    saver = statefile.Saver(str(path), interval=3600.0, time_limit=0.2)
    saver.next_due = 0.0
    saver.tick(r, lambda: 1.0)
    child = saver.child
    assert child is not None
    time.sleep(0.4)
    with caplog.at_level(logging.WARNING, "passnat.io.state"):
        saver.tick(r, lambda: 1.0)
    assert saver.child is None and "took longer than" in caplog.text
    with pytest.raises(ProcessLookupError):
        os.kill(child, signal.SIG_DFL)  # gone and reaped
    monkeypatch.setattr(statefile, "write", real_write)
    assert saver.final(r, lambda: 2.0) and statefile.load(str(path), passnat.Router(passnat.parse_config(CONFIG))) == 1
