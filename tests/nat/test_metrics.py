"""Prometheus metrics (B6): every drop reason, events and live sessions, valid exposition."""
from __future__ import annotations

import re

from passnat.nat import metrics
from passnat.nat.drops import Drop
from tests.nat.helpers import PC1, SRV, WAN_ADDR, make_router, tcp, udp

LINE = re.compile(r'^[a-z_]+(\{([a-z_]+="[^"]*",?)*\})? -?[0-9.e+]+$')


def test_exposition_has_every_drop_reason_and_sessions() -> None:
    r = make_router()
    r.handle("lan0", tcp(PC1, SRV, 1, 80, "S"), 0.0)
    r.handle("lan0", udp(PC1, SRV, 2, 53), 0.0)
    r.handle("lan1", udp(SRV, WAN_ADDR, 53, 9999), 0.0)
    text = metrics.render(r)
    for line in text.splitlines():
        assert line.startswith("# ") or LINE.match(line), line
    for d in Drop:
        assert f'passnat_drops_total{{reason="{d.value}"}}' in text
    assert 'passnat_drops_total{reason="no_session"} 1' in text
    assert 'passnat_sessions{protocol="tcp",type="napt"} 1' in text
    assert 'passnat_sessions{protocol="udp",type="napt"} 1' in text
    assert "passnat_sessions_created_total 2" in text
    assert "passnat_session_maximum 65536" in text


def test_extra_families_and_explain() -> None:
    r = make_router()
    text = metrics.render(r, [("passnat_interface_packets_total", "counter", "Packets per interface.",
                               [("passnat_interface_packets_total", {"interface": "lan0", "dir": "rx"}, 5.0)])])
    assert 'passnat_interface_packets_total{dir="rx",interface="lan0"} 5' in text
    assert "unsolicited" in metrics.explain("no_session")
