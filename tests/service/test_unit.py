"""The systemd unit: what it says, `systemd-analyze verify` on it, `passnat service install`."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from passnat.control.cli import main
from passnat.service import unit


def verify(path: Path) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("systemd-analyze")
    if exe is None:
        pytest.fail("systemd-analyze is missing: run `make deps` (scripts/install-deps.sh installs systemd)")
    return subprocess.run([exe, "verify", str(path)], capture_output=True, text=True, timeout=60, check=False)


def directives(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith("#"):
            k, v = line.split("=", 1)
            out.setdefault(k, []).append(v)
    return out


def test_unit_says_what_a_packet_daemon_needs() -> None:
    text = unit.render("/usr/local/bin/passnat")
    d = directives(text)
    assert d["Type"] == ["notify"] and d["NotifyAccess"] == ["main"]
    assert d["ExecStart"] == ["/usr/local/bin/passnat run --config /etc/passnat/passnat.conf --control "
                              "/run/passnat/control.sock --state-file /var/lib/passnat/state.json $PASSNAT_OPTIONS"]
    assert d["ExecReload"][-1] == "/bin/kill -HUP $MAINPID"
    assert d["ExecReload"][0] == d["ExecStartPre"][0] == (
        "/usr/local/bin/passnat check --quiet --config /etc/passnat/passnat.conf")
    assert d["Restart"] == ["on-failure"] and d["RuntimeDirectory"] == ["passnat"] and d["StateDirectory"] == ["passnat"]
    assert d["CapabilityBoundingSet"] == ["CAP_NET_RAW CAP_NET_ADMIN"]
    assert d["ProtectSystem"] == ["strict"] and d["ProtectHome"] == ["yes"] and d["NoNewPrivileges"] == ["yes"]
    assert "AF_PACKET" in d["RestrictAddressFamilies"][0] and "AF_NETLINK" in d["RestrictAddressFamilies"][0]
    assert d["EnvironmentFile"] == ["-/etc/passnat/passnat.env"] and d["WatchdogSec"] == ["30s"]
    assert "@PASSNAT@" not in text


def test_systemd_analyze_verify_accepts_the_unit_and_catches_a_broken_one(tmp_path: Path) -> None:
    good = tmp_path / "passnat.service"
    good.write_text(unit.render())  # ExecStart= this installation's passnat, which exists
    res = verify(good)
    assert res.returncode == 0 and res.stderr.strip() == "", res.stderr
    bad = tmp_path / "broken" / "passnat.service"
    bad.parent.mkdir()
    bad.write_text(unit.render().replace("ProtectSystem=strict", "ProtectSystm=strict"))
    res = verify(bad)
    assert "Unknown key 'ProtectSystm'" in res.stderr  # the check can fail
    missing = tmp_path / "missing" / "passnat.service"
    missing.parent.mkdir()
    missing.write_text(unit.render("/nonexistent/passnat"))
    assert verify(missing).returncode != 0


def test_security_exposure_is_low(tmp_path: Path) -> None:
    good = tmp_path / "passnat.service"
    good.write_text(unit.render())
    res = subprocess.run(["systemd-analyze", "security", "--offline=true", str(good)], capture_output=True,
                         text=True, timeout=60, check=False)
    line = [ln for ln in res.stdout.splitlines() if "Overall exposure level" in ln]
    assert line, res.stdout + res.stderr
    score = float(line[0].split("passnat.service:")[1].split()[0])
    assert score <= 3.0, line[0]  # "OK" in systemd's words (a default service scores 9.6)


def test_command_points_at_this_installation() -> None:
    cmd = unit.command()
    assert cmd.startswith(str(Path(sys.executable).parent)) or cmd == f"{sys.executable} -m passnat"


def test_service_unit_and_install_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["service", "unit", "--command", "/opt/passnat/bin/passnat"]) == 0
    assert "ExecStart=/opt/passnat/bin/passnat run " in capsys.readouterr().out
    root = tmp_path / "root"
    assert main(["service", "install", "--root", str(root), "-i", "lan0=eth1", "-i", "lan1=eth2", "--prepare",
                 "--http", "127.0.0.1:9469"]) == 0
    out = capsys.readouterr().out
    assert (root / "etc/systemd/system/passnat.service").read_text() == unit.render()
    env = (root / "etc/passnat/passnat.env").read_text()
    assert env.splitlines()[-1] == ("PASSNAT_OPTIONS=--interface lan0=eth1 --interface lan1=eth2 --prepare "
                                    "--http 127.0.0.1:9469")
    assert "no configuration yet: write" in out
    # an existing env file is kept unless --force
    assert main(["service", "install", "--root", str(root), "-i", "lan0=eth9"]) == 0
    assert "exists: left as it is" in capsys.readouterr().out
    assert "eth9" not in (root / "etc/passnat/passnat.env").read_text()
    assert main(["service", "install", "--root", str(root), "--force", "--options", "--log-level debug"]) == 0
    assert (root / "etc/passnat/passnat.env").read_text().splitlines()[-1] == "PASSNAT_OPTIONS=--log-level debug"
    assert main(["service", "install", "--root", str(root), "--force", "--options", "'--a b'"]) == 2
