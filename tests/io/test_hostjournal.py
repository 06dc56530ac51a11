"""The host journal: what passnat changed on the host, recorded before each change, replayed
by the next start after a kill (issue 13 §4).  Root-free: the ethtool and undo calls are recorded."""
from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from passnat.io import ethtool, hostsetup
from passnat.io.hostsetup import HostJournal, HostUndo, journal_path


@pytest.fixture
def applied(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[Any]]:
    done: dict[str, list[Any]] = {"offloads": [], "undo": []}
    monkeypatch.setattr(ethtool, "restore", lambda st: done["offloads"].append((st.ifname, st.gro_was_on, st.lro_was_on)))

    def fake_undo(self: HostUndo) -> None:
        done["undo"].append((list(self.sysctls), list(self.links_brought_up), self.table_created, self.ingress_created))
    monkeypatch.setattr(HostUndo, "_undo", fake_undo)
    return done


def test_journal_path_is_next_to_the_control_socket() -> None:
    assert journal_path("/run/passnat/control.sock") == "/run/passnat/control.host.json"
    assert journal_path("/tmp/x/ctl") == "/tmp/x/ctl.host.json"


def test_changes_are_recorded_then_forgotten_at_a_clean_undo(tmp_path: Path, applied: dict[str, list[Any]]) -> None:
    j = HostJournal(str(tmp_path / "run" / "control.host.json"))
    j.record_offloads(ethtool.OffloadState("eth1", True, False))
    j.record_sysctl("eth1", "forwarding", 1)
    j.record_link_up("eth2")
    j.record_table("netdev", hostsetup.INGRESS_TABLE)
    doc = json.loads(Path(j.path).read_text())
    assert doc == {"pid": os.getpid(), "offloads": {"eth1": [True, False]}, "sysctls": [["eth1", "forwarding", 1]],
                   "links_up": ["eth2"], "tables": [["netdev", "passnat_ingress"]]}
    assert stat.S_IMODE(os.stat(j.path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "run").st_mode) == 0o700
    HostUndo(journal=j).undo()
    assert not os.path.exists(j.path)


def test_a_killed_daemons_journal_is_replayed(tmp_path: Path, applied: dict[str, list[Any]],
                                              caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "control.host.json"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    path.write_text(json.dumps({
        "pid": int(dead.stdout), "offloads": {"lan0": [True, False], "lan1": [True, True]},
        "sysctls": [["lan1", "forwarding", 1], ["lan0", "arp_ignore", 0]], "links_up": ["lan1"],
        "tables": [["netdev", "passnat_ingress"], ["inet", "passnat_handoff"]]}))
    with caplog.at_level(logging.WARNING):
        assert HostJournal(str(path)).recover() is None
    assert applied["offloads"] == [("lan0", True, False), ("lan1", True, True)]
    assert applied["undo"] == [([("lan1", "forwarding", 1), ("lan0", "arp_ignore", 0)], ["lan1"], True, True)]
    assert not path.exists()
    assert "did not stop cleanly" in caplog.text and "lan0: GRO on" in caplog.text


def test_hostile_or_broken_journal_entries_are_ignored(tmp_path: Path, applied: dict[str, list[Any]]) -> None:
    path = tmp_path / "control.host.json"
    path.write_text(json.dumps({
        "pid": "x", "offloads": {"../../etc": [True, True], "lan0": ["yes", 1], "lan1": [True, False]},
        "sysctls": [["lan1", "rp_filter", 2], ["lan/../x", "forwarding", 1], ["lan0", "forwarding", True],
                    "junk", ["lan0", "forwarding", 0]],
        "links_up": [["lan1"], 7], "tables": [["inet", "filter"], [{}, []], "x"]}))
    assert HostJournal(str(path)).recover() is None
    assert applied["offloads"] == [("lan1", True, False)]
    assert applied["undo"] == [([("lan0", "forwarding", 0)], [], False, False)]
    for junk in ("{broken", "[1, 2]", json.dumps({"sysctls": 5, "tables": {"a": 1}})):
        path.write_text(junk)
        assert HostJournal(str(path)).recover() is None
        assert not path.exists()


def test_a_running_daemons_journal_is_not_touched(tmp_path: Path, applied: dict[str, list[Any]]) -> None:
    path = tmp_path / "control.host.json"
    other = subprocess.Popen([sys.executable, "-c", "import time; print('up', flush=True); time.sleep(30)", "passnat"],
                             stdout=subprocess.PIPE)
    try:
        assert other.stdout is not None and other.stdout.readline() == b"up\n"  # it runs (exec done)
        path.write_text(json.dumps({"pid": other.pid, "offloads": {"lan0": [True, False]}}))
        problem = HostJournal(str(path)).recover()
        assert problem is not None and f"pid {other.pid}" in problem and path.exists()
        assert applied["offloads"] == [] and applied["undo"] == []
    finally:
        other.kill()
        other.wait()
