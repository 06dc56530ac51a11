"""A missing Python package: one line naming it and how to install it, never a traceback."""
from __future__ import annotations

import sys

import pytest

from passnat.control.cli import main


def test_missing_pyroute2_in_passnat_run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import passnat.io.startup as startup

    def run(_req: object) -> int:
        from passnat.io.hostsetup import kernel_addresses

        kernel_addresses("eth0")  # imports pyroute2, as the host-setup check does
        return 0

    monkeypatch.setitem(sys.modules, "pyroute2", None)  # import pyroute2 -> ModuleNotFoundError
    monkeypatch.setattr(startup, "run", run)
    assert main(["run", "--config", "x.conf"]) == 1
    err = capsys.readouterr().err
    assert err == ("passnat: the Python package pyroute2 is not installed (needed by passnat run: netlink for "
                   "interfaces, addresses, qdiscs); install it: pip install pyroute2\n")


def test_missing_cryptography_before_the_lab_does_anything(monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "cryptography" else real(name, *a))
    assert main(["lab", "up", "--prefix", "nolab-"]) == 1
    assert "pip install 'passnat[lab]'" in capsys.readouterr().err


def test_a_missing_module_of_passnat_itself_is_a_bug_and_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    import passnat.io.startup as startup

    def run(_req: object) -> int:
        raise ModuleNotFoundError("No module named 'passnat.nowhere'", name="passnat.nowhere")

    monkeypatch.setattr(startup, "run", run)
    with pytest.raises(ModuleNotFoundError):
        main(["run", "--config", "x.conf"])
