"""Control views over a real engine: sessions, counters (every drop reason), clear, config, filter."""
from __future__ import annotations

import json
from typing import Any

import pytest
from scapy.all import IP, TCP, UDP, raw  # type: ignore[attr-defined]

import passnat
from passnat import speedups
from passnat.control import views
from passnat.control.format import format_counters, format_status_nat
from passnat.control.protocol import ProtocolError
from passnat.io.linkdrops import EVENTS, LinkDrop
from passnat.nat.drops import Drop

CONFIG = """\
interface lan0 add 192.168.0.1/24
interface lan1 add 203.0.113.1/24
nat napt add private 192.168.0.0-192.168.0.255 interface lan1
nat snapt add protocol tcp listen 8080 forward 192.168.0.50 80 interface lan1
filter add web_in interface lan1 direction in action pass protocol tcp dstport 80 state disable logging off enable
"""


@pytest.fixture
def router() -> passnat.Router:
    r = passnat.Router(passnat.parse_config(CONFIG, "t.conf"), seed=1)
    r.handle("lan0", raw(IP(src="192.168.0.11", dst="203.0.113.10") / UDP(sport=5000, dport=53) / b"q"), 10.0)
    r.handle("lan0", raw(IP(src="192.168.0.11", dst="203.0.113.10") / TCP(sport=40000, dport=443, flags="S")),
             10.0)
    r.handle("lan1", raw(IP(src="203.0.113.10", dst="203.0.113.1") / TCP(sport=50000, dport=8080, flags="S")),
             11.0)
    r.handle("lan1", raw(IP(src="203.0.113.10", dst="203.0.113.1") / UDP(sport=1, dport=9)), 11.0)
    return r


class FakeLink:
    name = "lan0"

    def stats(self) -> dict[str, Any]:
        return {"linux": "eth1", "rx_packets": 5, "rx_bytes": 500, "tx_packets": 4, "tx_bytes": 400,
                "ring_packets": 5, "ring_drops": 7, "ring_freezes": 0,
                "counters": {"arp_unresolved": 2, "arp_requests_sent": 3}}


def test_status_nat_records_render_as_seil_lines(router: passnat.Router) -> None:
    recs = views.status_nat(router, 12.0)
    assert [r["id"] for r in recs] == sorted(r["id"] for r in recs)
    json.dumps(recs)  # JSON-able
    lines = format_status_nat(recs).splitlines()[3:]
    assert any(line.endswith("udp    192.168.0.11:5000  =     203.0.113.1:5000  <->   203.0.113.10:53 [00:00:13]")
               for line in lines), lines
    assert any(":snapt lan1     tcp    192.168.0.50:80    =     203.0.113.1:8080  <-> 203.0.113.10:50000" in line
               for line in lines), lines


def test_counters_list_every_drop_reason_with_text(router: passnat.Router) -> None:
    data = views.counters(router, [FakeLink()], {"icmp_host_unreachable_sent": 1}, uptime=3.0)
    json.dumps(data)
    engine = {d["name"]: d for d in data["engine"]["drops"]}
    assert set(engine) == {d.value for d in Drop}
    assert all(d["explain"] for d in engine.values())
    assert engine["no_session"]["count"] == 1
    link = {d["name"]: d for d in data["link"]["drops"]}
    assert set(link) == {d.value for d in LinkDrop}
    assert link["rx_ring_full"]["count"] == 7 and link["arp_unresolved"]["count"] == 2
    assert set(data["link"]["events"]) == set(EVENTS)
    assert data["link"]["events"]["arp_requests_sent"] == 3
    assert data["link"]["events"]["icmp_host_unreachable_sent"] == 1
    assert data["interfaces"]["lan0"]["rx_packets"] == 5 and data["interfaces"]["lan0"]["ring_drops"] == 7
    assert data["engine"]["events"]["sessions"] == 3
    assert data["dataplane"] == {"mode": speedups.mode(), "reason": speedups.reason()}
    assert f"Data plane: {speedups.mode()} (" in format_counters(data)


def test_the_data_plane_mode_says_why() -> None:
    import subprocess
    import sys
    code = "from passnat import speedups; print(speedups.mode(), '|', speedups.reason())"
    pure = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env={"PASSNAT_PURE": "1", "PATH": "/usr/bin:/bin"}).stdout.strip()
    assert pure == "python | PASSNAT_PURE is set"
    built = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={"PATH": "/usr/bin:/bin"}).stdout.strip()
    assert built == "compiled | passnat._speedups is built"


def test_clear_one_and_all(router: passnat.Router) -> None:
    ids = [r["id"] for r in router.sessions(12.0)]
    assert views.clear_nat(router, ids[0]) == {"cleared": 1}
    with pytest.raises(ProtocolError, match="no NAT session with id 9999"):
        views.clear_nat(router, 9999)
    assert views.clear_nat(router, None) == {"cleared": len(ids) - 1}
    assert views.status_nat(router, 12.0) == []


def test_config_and_filter(router: passnat.Router) -> None:
    assert "nat napt add private 192.168.0.0-192.168.0.255 interface lan1" in views.config_text(router)
    data = views.status_filter(router, 12.0)
    json.dumps(data)
    assert data["rules"][0]["name"] == "web_in" and data["rules"][0]["pages"] == ["postnat"]
    assert data["rules"][0]["count"] == 1  # the SNAPT SYN to port 80 passed it
    assert data["default"]["action"] == "pass"


def test_arp_sorted_numerically() -> None:
    recs = [{"interface": "lan0", "address": "192.168.0.100"}, {"interface": "lan0", "address": "192.168.0.9"}]
    assert [r["address"] for r in views.arp(recs)] == ["192.168.0.9", "192.168.0.100"]


def test_doctor_findings_and_text(router: passnat.Router) -> None:
    from passnat.control.format import format_doctor
    assert format_doctor(views.doctor(router, 20.0)) == "no VPN passthrough problems seen\n"
    router.handle("lan0", raw(IP(src="192.168.0.11", dst="203.0.113.10", proto=51) / (b"\x04\x04\0\0" + b"\0" * 20)),
                  12.0)
    findings = views.doctor(router, 20.0)
    assert [f["code"] for f in findings] == ["ah"]
    json.dumps(findings)
    text = format_doctor(findings)
    assert text.startswith("[error] IPsec AH cannot pass NAT (ah)") and "fix:" in text


def test_metrics_include_engine_and_interfaces(router: passnat.Router) -> None:
    text = views.metrics(router, [FakeLink()], {"gratuitous_arp_sent": 2})
    assert 'passnat_interface_packets_total{direction="rx",interface="lan0"} 5' in text
    assert 'passnat_interface_ring_drops_total{interface="lan0"} 7' in text
    assert 'passnat_daemon_events_total{event="gratuitous_arp_sent"} 2' in text
    assert 'passnat_drops_total{reason="no_session"} 1' in text
