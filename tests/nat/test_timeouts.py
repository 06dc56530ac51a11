"""Session timers (R17) and limits (R18), driven by a fake clock (``now``)."""
from __future__ import annotations

import pytest
from scapy.all import IP, UDP, Raw

from tests.nat.helpers import PC1, PC2, PC3, SRV, WAN_ADDR, counters, make_router, one, ping, tcp, udp


def alive(r, now: float) -> int:  # noqa: ANN001
    r.on_timer(now)
    return len(r.sessions(now))


@pytest.mark.parametrize("config, packets, timeout", [
    ("", [("lan0", udp(PC1, SRV, 5000, 9000))], 30),                        # unreplied UDP: 30 s
    ("", [("lan0", udp(PC1, SRV, 5000, 9000)), ("lan1", udp(SRV, WAN_ADDR, 9000, 5000))], 900),  # replied: default
    ("nat timeout 120\n", [("lan0", udp(PC1, SRV, 5000, 9000))], 30),
    ("nat timeout 120\n", [("lan0", udp(PC1, SRV, 5000, 9000)), ("lan1", udp(SRV, WAN_ADDR, 9000, 5000))], 120),
    ("nat timeout 20\n", [("lan0", udp(PC1, SRV, 5000, 9000))], 20),     # never longer than after a reply
    ("nat timeout protocol udp 300\n", [("lan0", udp(PC1, SRV, 5000, 9000))], 300),  # the operator's udp timer
    ("nat timeout protocol udp-unreplied 5\n", [("lan0", udp(PC1, SRV, 5000, 9000))], 5),
    ("nat timeout protocol udp-unreplied 5\n",
     [("lan0", udp(PC1, SRV, 5000, 9000)), ("lan1", udp(SRV, WAN_ADDR, 9000, 5000))], 900),
    ("nat timeout protocol udp 300\nnat timeout protocol udp-unreplied 45\n",
     [("lan0", udp(PC1, SRV, 5000, 9000))], 45),
    ("", [("lan0", udp(PC1, SRV, 4500, 4500))], 900),                       # IKE (NAT-T): no short timer
    ("nat timeout protocol udp 300\n", [("lan0", udp(PC1, SRV, 5000, 53))], 15),     # DNS
    ("", [("lan0", udp(PC1, SRV, 5000, 123))], 15),                                   # NTP
    ("nat timeout protocol tcp-synonly 40\n", [("lan0", tcp(PC1, SRV, 4000, 80, "S"))], 40),
    ("nat timeout protocol tcp-established 5000\n",
     [("lan0", tcp(PC1, SRV, 4000, 80, "S")), ("lan1", tcp(SRV, WAN_ADDR, 80, 4000, "SA"))], 5000),
    ("nat timeout protocol icmp 70\n", [("lan0", ping(PC1, SRV, 9))], 70),
    ("nat timeout protocol icmp 70\n", [("lan0", ping(PC1, SRV, 9)), ("lan1", ping(SRV, WAN_ADDR, 9, reply=True))], 10),
    ("nat timeout protocol esp 1800\n", [("lan0", bytes(IP(src=PC1, dst=SRV, proto=50) / Raw(b"\0\0\x10\x01\0\0\0\x01")))], 1800),
])
def test_timeout_class_expires_on_time(config: str, packets: list[tuple[str, bytes]], timeout: int) -> None:
    r = make_router(config)
    for iface, pkt in packets:
        assert r.handle(iface, _fix(pkt), 0.0)
    assert alive(r, timeout - 0.5) == 1
    assert alive(r, timeout + 0.01) == 0


def _fix(pkt: bytes) -> bytes:
    ip = IP(pkt)
    ip.len = None
    ip.chksum = None
    return bytes(ip)


def test_any_packet_refreshes_a_session() -> None:
    r = make_router("nat timeout protocol udp 60\n")
    one(r.handle("lan0", udp(PC1, SRV, 5000, 9000), 0.0))
    for t in range(50, 500, 50):  # a keepalive every 50 s, alternately each way
        pkt = udp(PC1, SRV, 5000, 9000) if t % 100 else udp(SRV, WAN_ADDR, 9000, 5000)
        assert r.handle("lan0" if t % 100 else "lan1", pkt, float(t)), t
    assert alive(r, 500.0) == 1
    assert alive(r, 560.5) == 0


def test_tcp_closing_timer_after_fin_both_ways_and_rst() -> None:
    r = make_router()
    r.handle("lan0", tcp(PC1, SRV, 4000, 80, "S"), 0.0)
    r.handle("lan1", tcp(SRV, WAN_ADDR, 80, 4000, "SA"), 0.0)
    r.handle("lan0", tcp(PC1, SRV, 4000, 80, "FA"), 1.0)
    assert r.sessions(1.0)[0]["state"] == "fin_wait"
    assert r.sessions(1.0)[0]["remaining"] == 900
    r.handle("lan1", tcp(SRV, WAN_ADDR, 80, 4000, "FA"), 2.0)
    assert r.sessions(2.0)[0]["state"] == "closed"
    assert alive(r, 11.9) == 1 and alive(r, 12.1) == 0
    r.handle("lan0", tcp(PC1, SRV, 4001, 80, "S"), 20.0)
    r.handle("lan1", tcp(SRV, WAN_ADDR, 80, 4001, "R"), 21.0)
    assert alive(r, 31.5) == 0


def test_timers_run_inside_handle_without_on_timer() -> None:
    r = make_router("nat timeout protocol udp 30\n")
    out = one(r.handle("lan0", udp(PC1, SRV, 5000, 9000), 0.0))
    assert r.next_deadline() == 30.0
    assert r.handle("lan1", udp(SRV, WAN_ADDR, 9000, out[UDP].sport), 31.0) == []
    assert counters(r)["no_session"] == 1


def test_mapping_port_is_freed_with_its_last_session() -> None:
    r = make_router("nat timeout protocol udp 30\n")
    one(r.handle("lan0", udp(PC1, SRV, 5000, 1), 0.0))
    assert one(r.handle("lan0", udp(PC2, SRV, 5000, 1), 0.0))[UDP].sport != 5000
    r.on_timer(31.0)
    assert one(r.handle("lan0", udp(PC2, SRV, 5000, 1), 31.0))[UDP].sport == 5000


def test_restricted_per_private_ip() -> None:
    r = make_router("nat session restricted-per-private-ip 3\n")
    for port in range(3):
        assert r.handle("lan0", udp(PC1, SRV, 6000 + port, 53), 0.0)
    assert r.handle("lan0", udp(PC1, SRV, 6003, 53), 0.0) == []
    assert counters(r)["nat_session_limit_per_private_ip"] == 1
    assert r.handle("lan0", udp(PC2, SRV, 6003, 53), 0.0)  # other hosts are not limited


def test_restricted_per_ip_counts_the_creating_source() -> None:
    r = make_router("nat session restricted-per-ip 2\nnat snapt add protocol udp listen 53 forward 192.168.0.10 53\n")
    for port in (1, 2):
        assert r.handle("lan1", udp(SRV, WAN_ADDR, port, 53), 0.0)
    assert r.handle("lan1", udp(SRV, WAN_ADDR, 3, 53), 0.0) == []
    assert counters(r)["nat_session_limit_per_ip"] == 1


def test_global_maximum_drops_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    r = make_router("nat session maximum 3\n")
    for host in (PC1, PC2, PC3):
        assert r.handle("lan0", udp(host, SRV, 7000, 53), 0.0)
    with caplog.at_level("WARNING", logger="passnat.nat"):
        assert r.handle("lan0", udp(PC1, SRV, 7001, 53), 0.0) == []
    assert "nat session is full" in caplog.text
    assert counters(r)["nat_session_full"] == 1
    # existing sessions keep working
    assert r.handle("lan0", udp(PC1, SRV, 7000, 53), 0.1)
    assert r.handle("lan1", udp(SRV, WAN_ADDR, 53, 7000), 0.1)
    # and once one expires there is room again
    r.on_timer(16.0)
    assert r.handle("lan0", udp(PC1, SRV, 7001, 53), 16.0)


def test_reconfigure_keeps_sessions_and_applies_new_timers() -> None:
    import passnat
    from tests.nat.helpers import BASE
    r = make_router()
    out = one(r.handle("lan0", udp(PC1, SRV, 5000, 9000), 0.0))
    one(r.handle("lan1", udp(SRV, WAN_ADDR, 9000, out[UDP].sport), 0.5))  # replied: the udp timer, 900 s
    r.reconfigure(passnat.parse_config(BASE + "nat timeout protocol udp 50\n"))
    assert len(r.sessions(1.0)) == 1
    back = one(r.handle("lan1", udp(SRV, WAN_ADDR, 9000, out[UDP].sport), 1.0))
    assert back.dst == PC1
    one(r.handle("lan0", udp(PC1, SRV, 5001, 9000), 2.0))
    assert alive(r, 52.5) == 1  # the old session keeps its timer (900 s), the new one has 50 s
