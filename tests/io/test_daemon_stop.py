"""Daemon.stop()/close() release everything whatever failed before (issue 13 §4).

A broken state used to make the stop save raise, and the stop then left the
control socket behind, GRO off and the --prepare setup in place, with exit 1.
Here every step that can fail fails, and everything else is still released.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pytest

from passnat.control.server import ControlServer
from passnat.io import ethtool, statefile
from tests.io.fakes import FakeTx, make_daemon


class Undo:
    def __init__(self) -> None:
        self.calls = 0

    def undo(self) -> None:
        self.calls += 1


def test_stop_releases_everything_whatever_failed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    d, _rings, _txs, _clock = make_daemon(tmp_path)
    tx1 = None
    try:
        state = tmp_path / "state.json"
        d.options.state_file = str(state)
        d.saver = statefile.Saver(str(state))
        d.control = ControlServer(d.options.control_path, d.reactor, d.dispatch)
        undo = Undo()
        d.options.host_undo = undo  # type: ignore[assignment]

        def boom(*_a: Any, **_k: Any) -> Any:
            raise RuntimeError("broken")
        monkeypatch.setattr(d.router, "export_state", boom)  # the stop save fails
        monkeypatch.setattr(d.links["lan0"], "close", boom)  # so does closing one link
        monkeypatch.setattr(d, "_close_capture", boom)  # and a whole step
        restored: list[str] = []
        monkeypatch.setattr(ethtool, "restore", lambda st: restored.append(st.ifname))
        lan1 = d.links["lan1"]
        lan1.offloads = ethtool.OffloadState("eth1", True, False)
        tx1 = lan1.tx
        monkeypatch.setattr(lan1.ring, "close", boom, raising=False)  # its ring fails to close
        with caplog.at_level(logging.ERROR):
            d.stop()
        assert not os.path.exists(d.options.control_path) and d.control is None
        assert undo.calls == 1 and d.options.host_undo is None
        # the other link: its socket closed and its offloads restored although its ring failed
        assert lan1.tx is None and lan1.ring is None and restored == ["eth1"]
        assert tx1 is not None and tx1.sock.fileno() == -1
        assert "cannot save the sessions" in caplog.text and "closing lan0" in caplog.text
        assert "closing lan1" in caplog.text
        assert not state.exists()
        d.close()  # idempotent
        assert undo.calls == 1
    finally:
        for tx in FakeTx.opened:
            if tx is not tx1:  # the daemon closed that one
                tx.close()
        FakeTx.opened.clear()
