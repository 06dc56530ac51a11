"""passnat run's refusals before touching the host, and the host-setup rule parser (no namespaces)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from passnat.config import parse_config
from passnat.io import hostsetup, startup
from passnat.io.hostsetup import Attachment, handoff_interfaces, handoff_ruleset, ingress_ruleset
from passnat.io.startup import RunRequest, attachments, load_config

GOOD = "interface lan0 add 192.168.0.1/24\ninterface lan1 add 203.0.113.1/24\ninterface lan1 mtu 1400\n"


def run(tmp_path: Path, text: str, *mappings: str) -> int:
    conf = tmp_path / "r.conf"
    conf.write_text(text)
    return startup.run(RunRequest(config_path=str(conf), control_path=str(tmp_path / "c.sock"),
                                  mappings=list(mappings), log_level="error"))


def test_config_errors_refuse_with_file_line_column(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(tmp_path, "interface lan0 add 192.168.0.1/24\nnat napt add private 10.0.0.0-x interface lan1\n"
                         "route add default 1.2.3\n") == 1
    err = capsys.readouterr().err
    conf = tmp_path / "r.conf"
    assert f"{conf}:2:" in err and f"{conf}:3:" in err and "error" in err
    assert "not starting" in err


def test_unknown_mapping_and_missing_interface(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(tmp_path, GOOD, "lan7=eth0") == 1
    assert "has no interface lan7 (it has lan0, lan1)" in capsys.readouterr().err
    assert run(tmp_path, GOOD, "lan0=pnzz-absent0", "lan1=pnzz-absent1") == 1
    err = capsys.readouterr().err
    assert "interface pnzz-absent0 (configuration lan0) does not exist" in err
    assert "interface pnzz-absent1 (configuration lan1) does not exist" in err


def test_not_root_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: Any) -> None:
    monkeypatch.setattr(hostsetup, "is_root", lambda: False)
    assert run(tmp_path, GOOD) == 1
    assert "needs root" in capsys.readouterr().err


def test_attachments() -> None:
    cfg = parse_config(GOOD, "t.conf")
    atts, problems = attachments(cfg, ["lan1=eth1"])
    assert problems == []
    assert atts == [Attachment("lan0", "lan0", 1500), Attachment("lan1", "eth1", 1400)]
    _, problems = attachments(cfg, ["lan0=eth1", "lan1=eth1", "bad", "lan0=" + "x" * 16])
    assert any("more than one" in p for p in problems)
    assert any("expected NAME=LINUX-NAME" in p for p in problems)
    assert any("max. 15 characters" in p for p in problems)
    _, problems = attachments(parse_config("hostname x\n", "t.conf"), [])
    assert any("names no interface" in p for p in problems)


def test_load_config_unreadable(tmp_path: Path) -> None:
    config, lines = load_config(str(tmp_path / "absent.conf"))
    assert config is None and "cannot read" in lines[0]
    (tmp_path / "bin.conf").write_bytes(b"hostname \xff\n")
    config, lines = load_config(str(tmp_path / "bin.conf"))
    assert config is None and "not UTF-8" in lines[0]


def nft_rule(table: str, chain: str, key: str, right: Any, *extra: dict[str, Any]) -> dict[str, Any]:
    return {"rule": {"family": "inet", "table": table, "chain": chain, "expr": [
        {"match": {"op": "==", "left": {"meta": {"key": key}}, "right": right}}, *extra, {"drop": None}]}}


def test_handoff_rules_recognised() -> None:
    ruleset = [
        {"chain": {"family": "inet", "table": "h", "name": "in", "type": "filter", "hook": "input", "prio": -500}},
        {"chain": {"family": "ip", "table": "g", "name": "out", "type": "filter", "hook": "output", "prio": 0}},
        {"chain": {"family": "inet", "table": "h", "name": "fwd", "type": "filter", "hook": "forward", "prio": 0}},
        nft_rule("h", "in", "iifname", {"set": ["lan0", "lan1"]}),
        {"rule": {"family": "ip", "table": "g", "chain": "out", "expr": [
            {"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": "lan0"}},
            {"counter": {"packets": 0, "bytes": 0}}, {"drop": None}]}},
        nft_rule("h", "fwd", "iifname", "lan2"),  # not an input hook
        {"rule": {"family": "inet", "table": "h", "chain": "in", "expr": [  # conditional: not a handoff
            {"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "lan3"}},
            {"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": "tcp"}}, {"drop": None}]}},
    ]
    assert handoff_interfaces(ruleset, "input") == {"lan0", "lan1"}
    assert handoff_interfaces(ruleset, "output") == {"lan0"}
    text = handoff_ruleset(["lan0", "eth1"])
    assert 'iifname { "lan0", "eth1" } drop' in text and 'oifname { "lan0", "eth1" } drop' in text
    assert "table inet passnat_handoff" in text


def test_ingress_ruleset() -> None:
    text = ingress_ruleset(["lan0", "eth1.100"])
    assert text.startswith("table netdev passnat_ingress {")
    assert 'chain c1 { type filter hook ingress device "eth1.100" priority 0; policy drop; }' in text
