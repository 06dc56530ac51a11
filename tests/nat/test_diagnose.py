"""``passnat doctor`` findings (B3), one scenario per VPN failure the seed article describes."""
from __future__ import annotations

from scapy.all import IP, UDP, fragment, raw

from tests.nat.esp_sim import _esp
from tests.nat.helpers import PC1, PC2, SRV, WAN_ADDR, make_router, one, udp

SERVER = "203.0.113.10"


def codes(r, now: float = 100.0) -> set[str]:  # noqa: ANN001
    return {f.code for f in r.diagnose(now)}


def test_clean_router_has_no_findings() -> None:
    r = make_router()
    one(r.handle("lan0", udp(PC1, SRV, 1, 2), 0.0))
    assert r.diagnose(1.0) == []


def test_ah_is_explained() -> None:
    r = make_router()
    r.handle("lan0", raw(IP(src=PC1, dst=SERVER, proto=51) / (b"\x04\x04\0\0" + b"\0\0\1\0" + b"\0" * 16)), 0.0)
    [f] = r.diagnose(1.0)
    assert f.code == "ah" and f.severity == "error" and "ESP" in f.fix


def test_first_come_contention_is_explained_with_the_fix() -> None:
    r = make_router("nat option esp-passthrough first-come\n")
    one(r.handle("lan0", _esp(PC1, SERVER, 0x11, 1, b"a"), 0.0))
    one(r.handle("lan0", _esp(PC2, SERVER, 0x21, 1, b"b"), 0.0))
    [f] = [f for f in r.diagnose(1.0) if f.code == "esp-first-come"]
    assert PC1 in f.detail and PC2 in f.detail and "esp-passthrough spi" in f.fix
    r2 = make_router()
    one(r2.handle("lan0", _esp(PC1, SERVER, 0x11, 1, b"a"), 0.0))
    one(r2.handle("lan1", _esp(SERVER, WAN_ADDR, 0x12, 1, b"a"), 0.01))
    one(r2.handle("lan0", _esp(PC2, SERVER, 0x21, 1, b"b"), 0.02))
    assert codes(r2) == {"esp-shared"}


def test_idle_vpn_whose_session_expired() -> None:
    r = make_router("nat timeout protocol esp 120\n")
    one(r.handle("lan0", _esp(PC1, SERVER, 0x11, 1, b"a"), 0.0))
    one(r.handle("lan1", _esp(SERVER, WAN_ADDR, 0x12, 1, b"a"), 0.1))
    assert r.handle("lan1", _esp(SERVER, WAN_ADDR, 0x12, 2, b"a"), 500.0) == []
    found = {f.code: f for f in r.diagnose(501.0)}
    assert "vpn-session-expired" in found
    assert "nat timeout protocol esp" in found["vpn-session-expired"].fix
    assert "esp-unsolicited" in found


def test_out_of_order_fragments_with_requeueing_off() -> None:
    r = make_router("option ip fragment-requeueing off\n")
    frags = fragment(IP(src=PC1, dst=SRV, id=77) / UDP(sport=500, dport=500) / (b"c" * 2000), fragsize=800)
    for f in reversed(frags):
        r.handle("lan0", raw(f), 0.0)
    [f] = [f for f in r.diagnose(1.0) if f.code == "fragments-out-of-order"]
    assert "fragment-requeueing on" in f.fix


def test_df_packets_larger_than_the_wan_mtu() -> None:
    r = make_router("interface lan1 mtu 1400\n")
    big = raw(IP(src=PC1, dst=SRV, flags="DF") / UDP(sport=1, dport=2) / (b"x" * 1450))
    out = r.handle("lan0", big, 0.0)
    assert len(out) == 1 and out[0].interface == "lan0"  # the ICMP error
    assert "df-too-big" in codes(r)
