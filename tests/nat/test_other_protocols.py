"""AH (R15) and other IP protocols: address-only first-come sessions, counted and explained."""
from __future__ import annotations

from scapy.all import GRE, IP, raw

from tests.nat.helpers import PC1, PC2, WAN_ADDR, counters, make_router, one

SERVER = "203.0.113.10"


def ah(src: str, dst: str, spi: int = 0x100) -> bytes:
    # next header, payload len, reserved, SPI, sequence, ICV (12 bytes)
    return raw(IP(src=src, dst=dst, proto=51) / (bytes([4, 4, 0, 0]) + spi.to_bytes(4, "big") +
                                                 b"\0\0\0\1" + b"\xaa" * 12))


def test_ah_is_translated_counted_and_listed() -> None:
    r = make_router()
    out = one(r.handle("lan0", ah(PC1, SERVER), 0.0), "lan1")
    assert out.src == WAN_ADDR
    back = one(r.handle("lan1", ah(SERVER, WAN_ADDR, 0x200), 0.1), "lan0")
    assert back.dst == PC1
    assert counters(r)["ah_translated"] == 2
    [rec] = r.sessions(0.2)
    assert rec["protocol"] == "ah" and rec["inside"] == PC1 and rec["remote"] == SERVER


def test_ah_without_session_is_dropped_under_its_own_reason(caplog) -> None:  # noqa: ANN001
    r = make_router()
    assert r.handle("lan1", ah(SERVER, WAN_ADDR), 0.0) == []
    assert counters(r)["ah_no_session"] == 1
    with caplog.at_level("WARNING", logger="passnat.nat"):
        r.handle("lan0", ah(PC1, SERVER), 1.0)
    assert "AH cannot survive NAT" in caplog.text


def test_gre_v0_and_unknown_protocols_are_first_come_per_remote() -> None:
    r = make_router()
    g1 = one(r.handle("lan0", raw(IP(src=PC1, dst=SERVER) / GRE() / b"a"), 0.0))
    g2 = one(r.handle("lan0", raw(IP(src=PC2, dst=SERVER) / GRE() / b"b"), 0.0))
    assert g1.src == g2.src == WAN_ADDR
    assert one(r.handle("lan1", raw(IP(src=SERVER, dst=WAN_ADDR) / GRE() / b"c"), 0.1)).dst == PC1
    sctp = raw(IP(src=PC2, dst="203.0.113.20", proto=132) / b"sctp-ish")
    assert one(r.handle("lan0", sctp, 0.2)).src == WAN_ADDR
    assert one(r.handle("lan1", raw(IP(src="203.0.113.20", dst=WAN_ADDR, proto=132) / b"r"), 0.3)).dst == PC2
    assert r.handle("lan1", raw(IP(src="203.0.113.30", dst=WAN_ADDR, proto=132) / b"r"), 0.3) == []
    assert counters(r)["other_proto_no_session"] == 1
