"""/metrics (parsed by prometheus_client) and the status page, from a real engine with ESP, PPTP and IKE."""
from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

import passnat
from passnat import speedups
from passnat.control import views
from passnat.io.linkdrops import LinkDrop
from passnat.nat.drops import Drop
from passnat.service import page
from passnat.service.history import History, Sample
from tests.io.fakes import FakeTx, make_daemon
from tests.service.conftest import ESP_HOSTS


class FakeLink:
    def __init__(self, name: str, linux: str):
        self.name = name
        self.linux = linux

    def stats(self) -> dict[str, Any]:
        return {"linux": self.linux, "rx_packets": 5, "rx_bytes": 500, "tx_packets": 4, "tx_bytes": 400,
                "ring_packets": 5, "ring_drops": 7, "ring_freezes": 0,
                "counters": {"arp_unresolved": 2, "arp_requests_sent": 3}}


LINKS = [FakeLink("lan0", "eth1"), FakeLink("lan1", "eth2")]


def families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def test_metrics_parse_and_carry_every_family(vpn_router: passnat.Router) -> None:
    text = views.metrics(vpn_router, LINKS, {"internal_error": 1, "gratuitous_arp_sent": 2}, now=22.0, uptime=12.5)
    fam = families(text)  # raises on any syntax error
    # prometheus_client strips _total from counter family names
    drops = {s.labels["reason"]: s.value for s in fam["passnat_drops"].samples}
    assert set(drops) == {d.value for d in Drop}
    link = {s.labels["reason"]: s.value for s in fam["passnat_link_drops"].samples}
    assert set(link) == {d.value for d in LinkDrop}
    assert link["rx_ring_full"] == 14 and link["arp_unresolved"] == 4 and link["internal_error"] == 1
    per_if = {(s.labels["interface"], s.labels["reason"]): s.value for s in fam["passnat_interface_drops"].samples}
    assert per_if[("lan1", "rx_ring_full")] == 7
    pkts = {(s.labels["interface"], s.labels["direction"]): s.value for s in fam["passnat_interface_packets"].samples}
    assert pkts[("lan0", "rx")] == 5 and pkts[("lan1", "tx")] == 4
    sessions = {(s.labels["protocol"], s.labels["type"]): s.value for s in fam["passnat_sessions"].samples}
    assert sessions[("esp", "napt")] == 3 and sessions[("tcp", "napt")] == 1
    assert sessions[("udp", "napt")] == 2
    assert fam["passnat_esp_groups"].samples[0].value == 1
    [hosts] = fam["passnat_esp_group_hosts"].samples
    assert hosts.labels == {"interface": "lan1", "server": "203.0.113.10"} and hosts.value == 3
    owners = {(s.labels["host"], s.labels["direction"], s.labels["spi"]) for s in fam["passnat_esp_spi_owner"].samples}
    for i, h in enumerate(ESP_HOSTS):
        assert (h, "out", f"0x{0x1001 + i:08x}") in owners and (h, "in", f"0x{0xC001 + i:08x}") in owners
    assert {s.labels["state"] for s in fam["passnat_esp_spi_owner"].samples} == {"paired"}
    assert [(s.labels, s.value) for s in fam["passnat_pptp_control_connections"].samples] == [
        ({"role": "client inside"}, 1.0)]
    assert sum(s.value for s in fam["passnat_pptp_calls"].samples) == 1
    assert {s.labels["kind"]: s.value for s in fam["passnat_ike_sessions"].samples} == {"ike": 1, "nat-t": 1}
    [info] = fam["passnat_build"].samples if "passnat_build" in fam else fam["passnat_build_info"].samples
    assert info.labels["version"] == passnat.__version__
    [dp] = fam["passnat_data_plane"].samples if "passnat_data_plane" in fam else fam["passnat_data_plane_info"].samples
    assert dp.labels["mode"] == speedups.mode() and dp.labels["reason"] == speedups.reason()
    assert fam["passnat_uptime_seconds"].samples[0].value == 12.5
    events = {s.labels["event"] for s in fam["passnat_daemon_events"].samples}
    assert "gratuitous_arp_sent" in events and "internal_error" not in events  # a drop, not an event


def test_service_serves_metrics_with_the_prometheus_content_type(tmp_path: Path) -> None:
    d, _rings, _txs, _clock = make_daemon(tmp_path)
    try:
        resp = d.service.metrics()
        assert resp.status == 200 and resp.content_type == "text/plain; version=0.0.4; charset=utf-8"
        assert "passnat_session_maximum" in families(resp.body.decode())
        d.service._sample(1.0)
        html = d.service.page()
        assert html.content_type == "text/html; charset=utf-8" and b"<svg" in html.body
    finally:
        for tx in FakeTx.opened:
            tx.close()
        FakeTx.opened.clear()


def test_vpn_view(vpn_router: passnat.Router) -> None:
    v = views.vpn(vpn_router, 22.0)
    [g] = v["esp"]
    assert g["server"] == "203.0.113.10" and [h["host"] for h in g["hosts"]] == list(ESP_HOSTS)
    assert all(h["state"] == "paired" and len(h["pairs"]) == 1 for h in g["hosts"])
    [c] = v["pptp"]
    assert c["inside"] == "192.168.0.21" and c["remote_port"] == 1723
    assert c["calls"][0]["inside_call_id"] == 0x1234 and c["calls"][0]["peer_call_id"] == 128
    assert sorted((s["inside_port"], s["nat_t"]) for s in v["ike"]) == [(500, False), (4500, True)]
    cut = views.vpn(vpn_router, 22.0, limit=1)
    assert sum(len(x["hosts"]) for x in cut["esp"]) == 1 and cut["counts"]["esp_sessions"] == 3


class Tree(HTMLParser):
    """Checks nesting and collects elements by id and class."""

    VOID = {"meta", "br", "circle", "rect", "polyline", "img", "link"}

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.ids: dict[str, str] = {}
        self.rows: list[dict[str, str]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if "id" in a:
            assert a["id"] not in self.ids, f"duplicate id {a['id']}"
            self.ids[a["id"]] = tag
        if a.get("class") == "esp-host":
            self.rows.append(a)
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in self.VOID:
            return
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes <{self.stack[-1] if self.stack else None}>"
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def page_data(router: passnat.Router, history: History) -> page.PageData:
    counters = views.counters(router, LINKS, {}, uptime=100.0)
    return page.PageData(hostname='gw<"x">', version="0.1.0", uptime=3725.0, data_plane="compiled",
                         data_plane_reason="built", sessions=len(router.table), maximum=65536,
                         interfaces=counters["interfaces"], counters=counters, vpn=views.vpn(router, 22.0),
                         doctor=views.doctor(router, 22.0), history=history)


def test_page_structure_and_escaping(vpn_router: passnat.Router) -> None:
    h = History(interval=10.0)
    for i in range(8):
        h.add(Sample(1000.0 + 10 * i, 5 + i, 1000 * i, 900 * i, {"no_session": 2 * i, "filter_block": i}))
    html = page.render(page_data(vpn_router, h))
    t = Tree()
    t.feed(html)
    t.close()
    assert not t.stack, t.stack
    for ident in ("esp", "pptp", "ike", "interfaces", "doctor", "drops", "chart-sessions", "chart-packets",
                  "chart-drops", "data-plane", "sessions"):
        assert ident in t.ids, ident
    assert [r["data-host"] for r in t.rows] == list(ESP_HOSTS)
    assert all(r["data-server"] == "203.0.113.10" for r in t.rows)
    assert "gw&lt;&quot;x&quot;&gt;" in html and 'gw<"x">' not in html  # escaped
    assert "<script" not in html.lower()
    text = " ".join(t.text)
    assert "0x00001001 / 0x0000c001" in text and "4660 = " in text and "NAT-T" in text
    assert "esp-shared" in html  # the doctor's finding about three hosts on one server
    assert 'data-reason="no_session"' in html  # the drops chart
    assert html.count('class="series"') == 3  # sessions, received, sent


def test_page_with_no_samples_and_no_vpn() -> None:
    r = passnat.Router(passnat.parse_config("interface lan0 add 192.168.0.1/24\n"))
    html = page.render(page_data(r, History()))
    assert "no samples yet" in html and "No ESP sessions." in html and "No VPN passthrough problem seen." in html


@pytest.mark.parametrize("v,top", [(0, 1.0), (0.4, 0.5), (3, 5.0), (7, 10.0), (12, 20.0), (99, 100.0), (1000, 1000.0)])
def test_chart_scale(v: float, top: float) -> None:
    assert page._nice(v) == top


def test_history_rates_and_window() -> None:
    h = History(interval=10.0, capacity=3)
    assert h.due(0.0) and not h.due(5.0) and h.due(10.0)
    for i in range(5):
        h.add(Sample(100.0 + 10 * i, i, 100 * i, 50 * i, {"no_session": i}))
    assert len(h.series()) == 3  # the ring keeps the newest
    assert h.rates() == [(140.0 - 10, 10.0, 5.0), (140.0, 10.0, 5.0)]
    assert h.drops_in_window() == {"no_session": 2}
