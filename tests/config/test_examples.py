"""Whole configurations: the seil-syntax.md example and a real SEIL factory default."""
from __future__ import annotations

import re
from ipaddress import IPv4Address

from passnat.config.model import EspMode, FilterAction, SnaptKind
from passnat.config.parser import parse
from passnat.config.render import render
from tests.config.helpers import DATA

SKIPPED = "is not supported by passnat; line skipped"


def test_reference_example_parses_with_exactly_the_expected_warnings() -> None:
    path = DATA / "seil-syntax-example.conf"
    config = parse(path.read_text(), "example.conf")
    assert config.warnings == (
        f"example.conf:5:1: warning: ppp {SKIPPED}",
        f"example.conf:6:18: warning: interface pppoe0 over {SKIPPED}",
        f"example.conf:7:18: warning: interface pppoe0 ppp-configuration {SKIPPED}",
    )
    assert config.hostname == "gw1"
    lan1 = config.interface("lan1")
    assert lan1 is not None and lan1.mtu == 1454
    assert [r.kind for r in config.nat.snapt] == [SnaptKind.PORTS, SnaptKind.PROTOCOL]
    assert config.nat.snapt[1].protocol == 50 and config.nat.snapt[1].forward == IPv4Address("192.168.0.10")
    assert [f.name for f in config.filters] == ["ike_in", "esp_in", "lan_out", "wan_block"]
    assert config.filter_default is FilterAction.PASS
    assert config.nat.esp_mode is EspMode.SPI


def test_reference_example_means_the_same_without_its_trailing_comments() -> None:
    text = (DATA / "seil-syntax-example.conf").read_text()
    without = re.sub(r"\s+# \[[A-Z?]+\]$", "", text, flags=re.MULTILINE)
    assert "#" not in without
    assert parse(without) == parse(text)


def test_seil_factory_default_loads_with_a_warning_per_skipped_line() -> None:
    text = (DATA / "seil-factory-default.conf").read_text()
    config = parse(text, "factory.conf")
    skipped_lines = [int(w.split(":")[1]) for w in config.warnings]
    assert all(w.endswith(SKIPPED) for w in config.warnings)
    source = text.splitlines()
    implemented = [n for n, line in enumerate(source, 1) if n not in skipped_lines and not line.startswith("#")]
    assert [source[n - 1].split()[0] for n in implemented] == [
        "hostname", "interface", "route", "filter", "filter", "filter", "nat", "nat", "nat", "nat",
    ]


def test_seil_factory_default_renders_as_seil_prints_it() -> None:
    config = parse((DATA / "seil-factory-default.conf").read_text())
    assert render(config) == (
        'hostname ""\n'
        "interface lan0 add 192.168.0.1/24\n"
        "route add default pppoe0\n"
        "filter add seil_ctl_lan0 interface lan0 direction in action pass protocol tcp src 192.168.0.0/24 "
        "srcport 0-65535 dst self dstport 0-65535 state disable logging off enable\n"
        "filter add telnetd_block interface any direction in action block protocol tcp srcport 0-65535 "
        "dst self dstport 23 state disable logging on enable\n"
        "filter add httpd_block interface any direction in action block protocol tcp srcport 0-65535 "
        "dst self dstport 80 state disable logging on enable\n"
        "nat timeout 900\n"
        "nat logging off\n"
        "nat napt add private 192.168.0.0-192.168.255.255 interface pppoe0\n"
        "nat option port-assignment random\n"
        "option ip fragment-requeueing on\n"
        "option ip unicast-rpf strict\n"
    )
