"""``check_file`` (``passnat check``): output streams and exit codes."""
from __future__ import annotations

from pathlib import Path

import pytest

from passnat.config.check import check_file
from passnat.control.cli import main
from tests.config.helpers import DATA


def write(tmp_path: Path, text: str | bytes) -> str:
    path = tmp_path / "router.conf"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return str(path)


def test_valid_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "interface lan0 add 192.168.0.1/24\nppp add x\nnat napt add private 192.168.0.0/24\n")
    assert check_file(path) == 0
    out, err = capsys.readouterr()
    assert out == f"{path}: OK: 1 interface, 0 routes, 1 NAT rule, 0 filters, 1 warning\n"
    assert err == f"{path}:2:1: warning: ppp is not supported by passnat; line skipped\n"


def test_quiet_hides_warnings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "ppp add x\n")
    assert check_file(path, quiet=True) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert out.endswith(": OK: 0 interfaces, 0 routes, 0 NAT rules, 0 filters, 1 warning\n")


def test_errors_and_warnings_in_line_order(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "nat timeout x\nppp add x\nroute add default\n")
    assert check_file(path) == 1
    out, err = capsys.readouterr()
    assert out == f"{path}: 2 errors, 1 warning\n"
    assert err.splitlines() == [
        f'{path}:1:13: error: expected seconds (e.g. 900 or 1h30m), got "x"',
        f"{path}:2:1: warning: ppp is not supported by passnat; line skipped",
        f"{path}:3:18: error: expected a gateway address, an interface name or discard, got end of line",
    ]


def test_quiet_still_prints_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "ppp add x\nbogus\n")
    assert check_file(path, quiet=True) == 1
    assert capsys.readouterr().err.splitlines() == [
        (f'{path}:2:1: error: expected one of: filter, ha, hostname, interface, nat, option, route, '
        f'got "bogus" (unknown command)')
    ]


def test_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = str(tmp_path / "nope.conf")
    assert check_file(path) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"passnat: cannot read {path}: No such file or directory\n"


def test_invalid_utf8_is_an_error_at_its_position(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, b'hostname "gw"\nhostname "\xe6\x97\xa5\xff"\n')
    assert check_file(path) == 1
    assert capsys.readouterr().err == f"{path}:2:12: error: invalid UTF-8 byte 0xff\n"


def test_cli_check_command(capsys: pytest.CaptureFixture[str]) -> None:
    path = str(DATA / "seil-syntax-example.conf")
    assert main(["check", "--config", path, "--quiet"]) == 0
    assert capsys.readouterr().out == f"{path}: OK: 2 interfaces, 1 route, 4 NAT rules, 4 filters, 3 warnings\n"
