"""TCP MSS clamping through the router (R24): SYN and SYN-ACK crossing an interface with ``tcp-mss``.

Issue 4's acceptance: with ``tcp-mss auto`` on a 1454-MTU interface a SYN with
MSS 1460 leaves with 1398, MSS 1200 is left alone, a SYN without MSS gets
1398 added, and every checksum verifies.
"""
from __future__ import annotations

import pytest
from scapy.all import IP, TCP, Raw, raw  # type: ignore[attr-defined]

from tests.nat.helpers import PC1, SRV, WAN_ADDR, counters, make_router, one

PPPOE = "interface lan1 mtu 1454\ninterface lan1 tcp-mss auto\n"


def syn(src: str, dst: str, sport: int, dport: int, options: list[tuple[str, object]], flags: str = "S",
        payload: bytes = b"") -> bytes:
    return raw(IP(src=src, dst=dst) / TCP(sport=sport, dport=dport, flags=flags, options=options) / payload)


def mss_of(p: IP) -> int | None:
    for name, value in p[TCP].options:
        if name == "MSS":
            return int(value)
    return None


@pytest.mark.parametrize("options, expected", [
    ([("MSS", 1460)], 1398),                                    # clamped to MTU - 56
    ([("MSS", 1200)], 1200),                                    # smaller: left alone
    ([("MSS", 1398)], 1398),                                    # equal: left alone
    ([], 1398),                                                 # missing: added
    ([("MSS", 1460), ("SAckOK", b""), ("Timestamp", (1, 0)), ("NOP", None), ("WScale", 7)], 1398),
    ([("SAckOK", b""), ("Timestamp", (1, 0)), ("NOP", None), ("WScale", 7)], 1398),     # added to others
    ([("NOP", None), ("EOL", None)], 1398),                     # added where EOL cannot hide it
])
def test_syn_through_tcp_mss_auto_on_a_1454_mtu_wan(options: list[tuple[str, object]], expected: int) -> None:
    r = make_router(PPPOE)
    out = one(r.handle("lan0", syn(PC1, SRV, 4000, 443, options), 0.0), "lan1")   # one() verifies checksums
    assert mss_of(out) == expected
    kept = {name for name, _ in options if name not in ("MSS", "NOP", "EOL")}
    assert kept <= {name for name, _ in out[TCP].options}
    assert counters(r).get("tcp_mss_clamped", 0) == (0 if expected == dict(options).get("MSS") else 1)


def test_syn_ack_from_the_server_is_clamped_too() -> None:
    r = make_router(PPPOE)
    one(r.handle("lan0", syn(PC1, SRV, 4000, 443, [("MSS", 1460)]), 0.0))
    back = one(r.handle("lan1", syn(SRV, WAN_ADDR, 443, 4000, [("MSS", 1460)], flags="SA"), 0.0), "lan0")
    assert mss_of(back) == 1398


def test_a_syn_entering_through_the_interface_is_clamped() -> None:
    """SNAPT to an inside server: the SYN enters through the tcp-mss interface."""
    r = make_router(PPPOE + "nat snapt add protocol tcp listen 443 forward 192.168.0.10 443 interface lan1\n")
    out = one(r.handle("lan1", syn(SRV, WAN_ADDR, 5555, 443, [("MSS", 1460)]), 0.0), "lan0")
    assert out.dst == "192.168.0.10" and mss_of(out) == 1398


@pytest.mark.parametrize("config, expected", [
    ("interface lan1 tcp-mss 1300\n", 1300),
    ("interface lan1 tcp-mss off\n", 1460),
    ("", 1460),                                                  # off by default
    ("interface lan0 tcp-mss 1380\ninterface lan1 tcp-mss 1400\n", 1380),   # the smaller of both interfaces
    ("interface lan1 mtu 1492\ninterface lan1 tcp-mss auto\n", 1436),       # PPPoE 1492
])
def test_tcp_mss_settings(config: str, expected: int) -> None:
    r = make_router(config)
    out = one(r.handle("lan0", syn(PC1, SRV, 4000, 443, [("MSS", 1460)]), 0.0), "lan1")
    assert mss_of(out) == expected


def test_only_syns_are_touched() -> None:
    r = make_router(PPPOE)
    one(r.handle("lan0", syn(PC1, SRV, 4000, 443, [("MSS", 1460)]), 0.0))
    data = raw(IP(src=PC1, dst=SRV) / TCP(sport=4000, dport=443, flags="A", options=[("MSS", 1460)]) / b"x")
    out = one(r.handle("lan0", data, 0.1), "lan1")
    assert mss_of(out) == 1460


def test_syn_with_data_keeps_its_payload_when_the_option_is_added() -> None:
    r = make_router(PPPOE)
    out = one(r.handle("lan0", syn(PC1, SRV, 4000, 443, [("NOP", None)] * 4, payload=b"fastopen"), 0.0))
    assert mss_of(out) == 1398 and bytes(out[TCP].payload) == b"fastopen"
    assert out.len == 20 + 28 + 8


def test_syn_without_room_for_the_option_is_left_as_is() -> None:
    r = make_router(PPPOE)
    opts = [("NOP", None)] * 40                                  # 40 bytes of options: data offset 15
    out = one(r.handle("lan0", syn(PC1, SRV, 4000, 443, opts), 0.0))
    assert mss_of(out) is None and out[TCP].dataofs == 15


def test_clamping_then_mtu() -> None:
    """A clamped SYN that grew still obeys the MTU; the clamp lets data fit the WAN."""
    r = make_router(PPPOE)
    one(r.handle("lan0", syn(PC1, SRV, 4000, 443, []), 0.0))
    one(r.handle("lan1", syn(SRV, WAN_ADDR, 443, 4000, [("MSS", 1460)], flags="SA"), 0.0))
    seg = raw(IP(src=PC1, dst=SRV, flags="DF") / TCP(sport=4000, dport=443, flags="A") / Raw(b"d" * 1398))
    assert len(seg) == 1438                                      # a full-MSS segment fits the 1454 MTU
    one(r.handle("lan0", seg, 0.1), "lan1")
