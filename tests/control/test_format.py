"""Text forms of the operator's commands (pure functions; SEIL's line format exactly)."""
from __future__ import annotations

from typing import Any

from passnat.control.format import (
    format_arp,
    format_counters,
    format_status_filter,
    format_status_nat,
    hms,
    nat_line,
)

#: SEIL's own output (reference/seil-syntax.md §7), and the records it shows
SEIL_LINES = [
    "   1:napt  pppoe1   tcp   192.168.1.135:50783 =  198.51.100.111:50783 <->   192.0.2.222:443 [00:11:53]",
    "   3:snapt pppoe0   udp    192.168.1.51:53    =    223.0.113.11:53    <-> 192.0.2.222:17387 [00:00:14]",
    "  10:snapt pppoe0   tcp    192.168.1.41:443   =    223.0.113.11:443   <-> 192.0.2.222:57711 [00:15:00]",
]


def rec(id_: int | None, type_: str, iface: str, proto: str, inside: str, iport: int | None, outside: str,
        oport: int | None, remote: str | None, rport: int | None, remaining: float | None,
        **extra: Any) -> dict[str, Any]:
    return {"id": id_, "type": type_, "interface": iface, "protocol": proto, "inside": inside,
            "inside_port": iport, "outside": outside, "outside_port": oport, "remote": remote,
            "remote_port": rport, "remaining": remaining, **extra}


SEIL_RECORDS = [
    rec(1, "napt", "pppoe1", "tcp", "192.168.1.135", 50783, "198.51.100.111", 50783, "192.0.2.222", 443, 713),
    rec(3, "snapt", "pppoe0", "udp", "192.168.1.51", 53, "223.0.113.11", 53, "192.0.2.222", 17387, 14.2),
    rec(10, "snapt", "pppoe0", "tcp", "192.168.1.41", 443, "223.0.113.11", 443, "192.0.2.222", 57711, 900),
]


def test_seil_lines_exactly() -> None:
    assert [nat_line(r) for r in SEIL_RECORDS] == SEIL_LINES


def test_status_nat_sections() -> None:
    text = format_status_nat(SEIL_RECORDS + [rec(None, "dynamic", "lan1", "any", "192.168.0.20", None,
                                                 "198.51.100.20", None, None, None, 30.0)])
    lines = text.splitlines()
    assert lines[0] == "List of active IP mapping:"
    assert lines[1] == "dynamic lan1        192.168.0.20 =   198.51.100.20 [00:00:30]"
    assert lines[3] == "List of active sessions:"
    assert lines[4:] == SEIL_LINES


def test_portless_and_esp_details() -> None:
    r = rec(7, "napt", "lan1", "esp", "192.168.0.11", None, "203.0.113.1", None, "203.0.113.10", None, 599.6,
            esp={"mode": "spi", "state": "paired", "out_spis": ["0x00001001"], "in_spis": ["0x0000c001"],
                 "pairs": [["0x00001001", "0x0000c001"]]})
    lines = format_status_nat([r]).splitlines()[3:]
    assert lines[0] == ("   7:napt  lan1     esp    192.168.0.11       =     203.0.113.1       <->      "
                        "203.0.113.10 [00:10:00]")
    assert lines[1] == ("          esp: mode spi, paired; outbound SPI 0x00001001; inbound SPI 0x0000c001 -> "
                        "192.168.0.11")
    assert lines[2] == "               SA pair: out 0x00001001 / in 0x0000c001"


def test_pptp_details() -> None:
    ctrl = rec(4, "napt", "lan1", "tcp", "192.168.0.11", 40000, "203.0.113.1", 40000, "203.0.113.10", 1723, 900,
               pptp={"role": "client inside", "calls": [
                   {"inside_call_id": 4660, "outside_call_id": 45793, "peer_call_id": 128,
                    "state": "established", "gre_session": 5}]})
    gre = rec(5, "napt", "lan1", "gre", "192.168.0.11", 4660, "203.0.113.1", 45793, "203.0.113.10", 128, 60,
              pptp={"inside_call_id": 4660, "outside_call_id": 45793, "peer_call_id": 128, "control_session": 4})
    lines = format_status_nat([ctrl, gre]).splitlines()[3:]
    assert lines[1] == "          pptp: client inside, 1 call(s)"
    assert lines[2] == "               call id 4660 = 45793 <-> peer call id 128 (established), gre session 5"
    assert lines[3].startswith("   5:napt  lan1     gre    192.168.0.11:4660  =     203.0.113.1:45793 <-> ")
    assert lines[4] == "          pptp gre: call id 4660 = 45793 <-> peer call id 128, control session 4"


def test_hms() -> None:
    assert hms(0) == "00:00:00"
    assert hms(3599.6) == "01:00:00"
    assert hms(-3) == "00:00:00"
    assert hms(None) == "--:--:--"
    assert hms(100 * 3600) == "100:00:00"


def test_filter_text_uses_the_filter_format() -> None:
    data = {"default": {"action": "block", "blocked": 3}, "states": [], "counters": {},
            "rules": [{"position": 1, "name": "HTTP", "pages": ["prenat"], "interface": "pppoe1",
                       "direction": "out", "action": "pass", "protocol": "tcp", "icmp_type": None, "src": "any",
                       "srcport": None, "dst": "any", "dstport": "80", "ipopts": None, "state": False,
                       "state_ttl": None, "logging": "off", "label": None, "enabled": True, "count": 2444816}]}
    assert format_status_filter(data).splitlines() == [
        "page prenat id HTTP pass out on pppoe1 proto tcp from any to any port 80 count 2444816",
        "default block blocked 3"]


def test_counters_and_arp_text() -> None:
    data = {"engine": {"drops": [{"name": "no_session", "count": 3, "explain": "unsolicited"}],
                       "events": {"sessions": 2}},
            "link": {"drops": [{"name": "rx_ring_full", "count": 0, "explain": "ring full"}],
                     "events": {"arp_requests_sent": 1}},
            "interfaces": {"lan0": {"linux": "eth1", "rx_packets": 10, "rx_bytes": 1000, "tx_packets": 9,
                                    "tx_bytes": 900, "ring_drops": 0}},
            "uptime": 61}
    text = format_counters(data)
    assert "  no_session                                  3  unsolicited" in text
    assert "  rx_ring_full                                0  ring full" in text
    assert "  lan0     eth1                   10           1000            9            900           0" in text
    assert text.endswith("Uptime: 00:01:01\n")
    arp = format_arp([{"interface": "lan0", "address": "192.168.0.11", "mac": "02:00:00:00:00:0b",
                       "state": "reachable", "age": 3.2, "queued": 0},
                      {"interface": "lan1", "address": "203.0.113.99", "mac": None, "state": "incomplete",
                       "age": None, "queued": 2}]).splitlines()
    assert arp[1] == "lan0       192.168.0.11    02:00:00:00:00:0b reachable       3s      0"
    assert arp[2] == "lan1       203.0.113.99    (incomplete)      incomplete       -      2"
