"""A real engine with VPN sessions of every kind (for the metrics, the page and the VPN view)."""
from __future__ import annotations

import pytest
from scapy.all import IP, UDP, raw  # type: ignore[attr-defined]

import passnat
from tests.nat.esp_sim import SA, EspNet
from tests.nat.test_pptp import start_call

ESP_HOSTS = ("192.168.0.11", "192.168.0.12", "192.168.0.13")


def build_vpn_router() -> passnat.Router:
    from tests.nat.test_pptp import router

    r = router("nat option esp-passthrough spi\n")
    start_call(r, "192.168.0.21", 0x1234, 128)  # PPTP: a control connection with one call
    net = EspNet(r)
    for i, host in enumerate(ESP_HOSTS):
        sa = net.add_sa(SA(host, out_spi=0x1001 + i, in_spi=0xC001 + i))
        net.traffic(sa, 1.0 + i * 3.0, 10.0 + i * 3.0, 0.5)
    stats = net.run(20.0)
    assert not stats.wrong
    for sport, dport in ((500, 500), (4500, 4500)):
        r.handle("lan0", raw(IP(src="192.168.0.31", dst="203.0.113.10") / UDP(sport=sport, dport=dport) / b"ike"),
                 21.0)
    return r


@pytest.fixture
def vpn_router() -> passnat.Router:
    return build_vpn_router()
