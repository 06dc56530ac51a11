"""Table-driven vectors (VPP ``packets.def`` style): name, config, input packets, expected output.

Each vector feeds its packets in order to a fresh router; only the *last*
packet's outputs are compared field by field (earlier ones set up state).
``None`` for the expected output means: dropped, counted under ``drop``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from scapy.all import ICMP, IP, TCP, UDP
from scapy.layers.inet import IPerror, TCPerror, UDPerror

from tests.nat.helpers import GW, PC1, PC2, SRV, WAN_ADDR, counters, icmp_error, make_router, one, ping, tcp, udp


@dataclass
class Vector:
    name: str
    packets: list[tuple[str, bytes]]
    interface: str | None  # egress, or None when dropped
    fields: dict[str, object] = field(default_factory=dict)
    config: str = ""
    drop: str | None = None
    next_hop: str | None = None


def _sent(*setup: tuple[str, bytes]) -> bytes:
    """The packet the router emits for the last of ``setup`` (to quote in ICMP errors)."""
    r = make_router()
    out = []
    for iface, pkt in setup:
        out = r.handle(iface, pkt, 0.0)
    return out[0].packet


VECTORS = [
    Vector("napt tcp syn out", [("lan0", tcp(PC1, SRV, 1025, 80, "S"))], "lan1",
           {"src": WAN_ADDR, "sport": 1025, "dst": SRV, "dport": 80, "ttl": 63}, next_hop=GW),
    Vector("napt tcp syn-ack back", [("lan0", tcp(PC1, SRV, 1025, 80, "S")), ("lan1", tcp(SRV, WAN_ADDR, 80, 1025, "SA"))],
           "lan0", {"src": SRV, "dst": PC1, "dport": 1025}, next_hop=PC1),
    Vector("napt udp out", [("lan0", udp(PC1, SRV, 5353, 53))], "lan1", {"src": WAN_ADDR, "sport": 5353}),
    Vector("napt udp back", [("lan0", udp(PC1, SRV, 5353, 53)), ("lan1", udp(SRV, WAN_ADDR, 53, 5353))], "lan0",
           {"dst": PC1, "dport": 5353}),
    Vector("napt icmp echo out", [("lan0", ping(PC1, SRV, 42))], "lan1", {"src": WAN_ADDR, "id": 42}),
    Vector("napt icmp echo back", [("lan0", ping(PC1, SRV, 42)), ("lan1", ping(SRV, WAN_ADDR, 42, reply=True))], "lan0",
           {"dst": PC1, "id": 42, "type": 0}),
    Vector("port collision: second host remapped", [("lan0", udp(PC1, SRV, 5000, 53)), ("lan0", udp(PC2, SRV, 5000, 53))],
           "lan1", {"src": WAN_ADDR, "sport": 5001}),
    Vector("EIM: same mapping to a second destination",
           [("lan0", udp(PC2, SRV, 5000, 53)), ("lan0", udp(PC1, SRV, 5000, 53)), ("lan0", udp(PC1, "198.51.100.99", 5000, 123))],
           "lan1", {"sport": 5001, "dst": "198.51.100.99"}),
    Vector("snapt port range", [("lan1", tcp(SRV, WAN_ADDR, 999, 2002, "S"))], "lan0", {"dst": "192.168.0.10", "dport": 3002},
           config="nat snapt add protocol tcp listen 2000-2009 forward 192.168.0.10 3000-3009 interface lan1\n"),
    Vector("snapt protocol forward (ESP)", [("lan1", bytes(IP(src=SRV, dst=WAN_ADDR, proto=50) / (b"\0\0\0\7\0\0\0\1" + b"e" * 16)))],
           "lan0", {"dst": "192.168.0.10"}, config="nat snapt add protocol esp forward 192.168.0.10 interface lan1\n"),
    Vector("snapt default", [("lan1", udp(SRV, WAN_ADDR, 9, 6000))], "lan0", {"dst": "192.168.0.10", "dport": 6000},
           config="nat snapt add default 192.168.0.10 interface lan1\n"),
    Vector("static nat out", [("lan0", udp("192.168.0.20", SRV, 7, 7))], "lan1", {"src": "203.0.113.20", "sport": 7},
           config="nat static add 192.168.0.20 203.0.113.20 interface lan1\n"),
    Vector("static nat in", [("lan1", tcp(SRV, "203.0.113.20", 7, 22, "S"))], "lan0", {"dst": "192.168.0.20", "dport": 22},
           config="nat static add 192.168.0.20 203.0.113.20 interface lan1\n"),
    Vector("dynamic nat out", [("lan0", udp("192.168.0.30", SRV, 7, 7))], "lan1", {"src": "203.0.113.40"},
           config="nat dynamic add private 192.168.0.30-192.168.0.31 interface lan1\n"
                  "nat dynamic add global 203.0.113.40-203.0.113.41 interface lan1\n"),
    Vector("dynamic nat in", [("lan0", udp("192.168.0.30", SRV, 7, 7)), ("lan1", udp(SRV, "203.0.113.40", 7, 7))], "lan0",
           {"dst": "192.168.0.30"},
           config="nat dynamic add private 192.168.0.30-192.168.0.31 interface lan1\n"
                  "nat dynamic add global 203.0.113.40-203.0.113.41 interface lan1\n"),
    Vector("icmp port unreachable about udp", [("lan0", udp(PC1, SRV, 5000, 9)),
                                                ("lan1", icmp_error(SRV, WAN_ADDR, _sent(("lan0", udp(PC1, SRV, 5000, 9)))))],
           "lan0", {"dst": PC1, "type": 3, "code": 3, "inner_src": PC1, "inner_sport": 5000}),
    Vector("icmp frag needed about tcp", [("lan0", tcp(PC1, SRV, 5000, 80, "S")),
                                           ("lan1", icmp_error(GW, WAN_ADDR, _sent(("lan0", tcp(PC1, SRV, 5000, 80, "S"))), 3, 4, 1280))],
           "lan0", {"dst": PC1, "type": 3, "code": 4, "nexthopmtu": 1280, "inner_src": PC1, "inner_sport": 5000}),
    Vector("icmp port unreachable about tcp", [("lan0", tcp(PC1, SRV, 5001, 81, "S")),
                                                ("lan1", icmp_error(SRV, WAN_ADDR, _sent(("lan0", tcp(PC1, SRV, 5001, 81, "S")))))],
           "lan0", {"dst": PC1, "type": 3, "code": 3, "inner_src": PC1, "inner_sport": 5001}),
    Vector("icmp frag needed about udp", [("lan0", udp(PC1, SRV, 5002, 53)),
                                           ("lan1", icmp_error(GW, WAN_ADDR, _sent(("lan0", udp(PC1, SRV, 5002, 53))), 3, 4, 1400))],
           "lan0", {"dst": PC1, "type": 3, "code": 4, "nexthopmtu": 1400, "inner_src": PC1, "inner_sport": 5002}),
    Vector("unsolicited udp dropped", [("lan1", udp(SRV, WAN_ADDR, 53, 5000))], None, drop="no_session"),
    Vector("unsolicited tcp syn dropped", [("lan1", tcp(SRV, WAN_ADDR, 4444, 22, "S"))], None, drop="no_session"),
    Vector("ttl 1 dropped", [("lan0", udp(PC1, SRV, 1, 2, ttl=1))], "lan0", {"type": 11, "dst": PC1}),
    Vector("truncated", [("lan0", udp(PC1, SRV, 1, 2)[:10])], None, drop="truncated"),
    Vector("not ipv4", [("lan0", b"\x60" + b"\0" * 39)], None, drop="not_ipv4"),
    Vector("bad header checksum", [("lan0", udp(PC1, SRV, 1, 2)[:10] + b"\xde\xad" + udp(PC1, SRV, 1, 2)[12:])], None,
           drop="bad_ip_checksum"),
    Vector("unknown interface", [("eth9", udp(PC1, SRV, 1, 2))], None, drop="unknown_interface"),
]


@pytest.mark.parametrize("v", VECTORS, ids=[v.name for v in VECTORS])
def test_vector(v: Vector) -> None:
    r = make_router(v.config)
    outs = []
    for iface, pkt in v.packets:
        outs = r.handle(iface, pkt, 0.0)
    if v.interface is None:
        assert outs == []
        assert counters(r).get(v.drop or "", 0) >= 1, counters(r)
        return
    ip = one(outs, v.interface)
    if v.next_hop is not None:
        assert outs[0].next_hop == v.next_hop
    for name, want in v.fields.items():
        if name == "inner_src":
            got = ip[IPerror].src
        elif name == "inner_sport":
            got = (ip[TCPerror] if ip.haslayer(TCPerror) else ip[UDPerror]).sport
        elif name in ("sport", "dport"):
            layer = TCP if ip.haslayer(TCP) else UDP
            got = getattr(ip[layer], name)
        elif name in ("id", "type", "code", "nexthopmtu"):
            got = getattr(ip[ICMP], name)
        else:
            got = getattr(ip, name)
        assert got == want, f"{name}: {got!r} != {want!r}"
