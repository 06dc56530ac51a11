"""Interface MTU (R23): the router fragments, or answers DF with ICMP fragmentation needed.

Issue 4's acceptance: a 1500-byte packet through a 1400-MTU WAN leaves as two
fragments that scapy reassembles to the translated original when DF is
clear; with DF set the LAN host gets ICMP type 3 code 4 with MTU 1400 at its
own (pre-NAT) address.  Plus the inbound direction, IP options copying,
already fragmented datagrams and the fast path.
"""
from __future__ import annotations

import pytest
from scapy.all import (  # type: ignore[attr-defined]
    ICMP,
    IP,
    TCP,
    UDP,
    IPOption_Router_Alert,
    IPOption_RR,
    Raw,
    defragment,
    raw,
)
from scapy.layers.inet import IPerror

from tests.nat.fragment_helpers import check_fragment, reassemble, split
from tests.nat.helpers import (
    GW,
    PC1,
    SRV,
    WAN_ADDR,
    counters,
    make_router,
    one,
    udp,
    verify,
)

WAN_1400 = "interface lan1 mtu 1400\n"


def big_udp(src: str, dst: str, sport: int, dport: int, *, df: bool, size: int = 1500, ident: int = 0x77) -> bytes:
    return raw(IP(src=src, dst=dst, id=ident, flags="DF" if df else 0) / UDP(sport=sport, dport=dport)
               / Raw(bytes(i % 251 for i in range(size - 28))))


def test_df_clear_1500_through_1400_wan_leaves_as_two_fragments_scapy_reassembles() -> None:
    r = make_router(WAN_1400)
    pkt = big_udp(PC1, SRV, 5000, 6000, df=False)
    outs = r.handle("lan0", pkt, 0.0)
    assert len(outs) == 2 and all(o.interface == "lan1" and o.next_hop == GW for o in outs)
    assert all(len(o.packet) <= 1400 for o in outs)
    (off0, len0, mf0), (off1, len1, mf1) = (check_fragment(o.packet) for o in outs)
    assert (off0, mf0, off1, mf1) == (0, True, len0, False) and len0 % 8 == 0 and len0 + len1 == 1480
    whole = defragment([IP(o.packet) for o in outs])
    assert len(whole) == 1
    got = verify(raw(whole[0]))
    expected = IP(src=WAN_ADDR, dst=SRV, id=0x77, ttl=63) / UDP(sport=5000, dport=6000) / IP(pkt)[Raw]
    assert (got.src, got.dst, got.ttl, got.len) == (WAN_ADDR, SRV, 63, 1500)
    assert raw(got)[20:] == raw(expected)[20:]
    assert counters(r)["fragments_made"] == 2


def test_df_set_gets_icmp_fragmentation_needed_at_the_lan_hosts_own_address() -> None:
    r = make_router(WAN_1400)
    pkt = big_udp(PC1, SRV, 5000, 6000, df=True)
    err = one(r.handle("lan0", pkt, 0.0), "lan0")
    assert (err.src, err.dst) == ("192.168.0.1", PC1)
    assert (err[ICMP].type, err[ICMP].code, err[ICMP].nexthopmtu) == (3, 4, 1400)
    quoted = err[IPerror]
    assert (quoted.src, quoted.dst, quoted.id) == (PC1, SRV, 0x77)   # the host's own packet, pre-NAT
    assert counters(r)["fragmentation_needed"] == 1
    assert r.sessions(0.0) == []                                        # the session made for it is rolled back


def test_df_set_at_the_mtu_exactly_passes() -> None:
    r = make_router(WAN_1400)
    out = one(r.handle("lan0", big_udp(PC1, SRV, 5000, 6000, df=True, size=1400), 0.0), "lan1")
    assert out.len == 1400 and out.flags.DF


@pytest.mark.parametrize("df", [False, True])
def test_inbound_through_a_small_lan_mtu(df: bool) -> None:
    r = make_router("interface lan0 mtu 1300\n")
    one(r.handle("lan0", udp(PC1, SRV, 5000, 6000), 0.0))
    pkt = big_udp(SRV, WAN_ADDR, 6000, 5000, df=df)
    outs = r.handle("lan1", pkt, 1.0)
    if df:
        err = one(outs, "lan1")
        assert (err.src, err.dst, err[ICMP].nexthopmtu) == (WAN_ADDR, SRV, 1300)
        assert (err[IPerror].src, err[IPerror].dst) == (SRV, WAN_ADDR)  # as the server sent it
        return
    assert len(outs) == 2 and all(o.interface == "lan0" and len(o.packet) <= 1300 for o in outs)
    got = verify(reassemble([o.packet for o in outs]))
    assert (got.src, got.dst, got[UDP].dport) == (SRV, PC1, 5000)


def test_options_are_copied_only_where_rfc791_says() -> None:
    r = make_router(WAN_1400)
    pkt = raw(IP(src=PC1, dst=SRV, options=[IPOption_Router_Alert(), IPOption_RR(routers=["0.0.0.0"] * 2)])
              / UDP(sport=5000, dport=6000) / Raw(b"o" * 1600))
    outs = r.handle("lan0", pkt, 0.0)
    assert len(outs) == 2
    first, second = (IP(o.packet) for o in outs)
    assert [o.option for o in first.options if o.option] == [20, 7]   # router alert (copied) + record route
    assert [o.option for o in second.options if o.option] == [20]     # only the copied one
    assert (first.ihl, second.ihl) == (9, 6)
    got = verify(reassemble([o.packet for o in outs]))
    assert got[UDP].sport == 5000 and bytes(got[UDP].payload) == b"o" * 1600


def test_an_established_flow_takes_the_slow_path_only_for_big_packets() -> None:
    r = make_router(WAN_1400)
    one(r.handle("lan0", udp(PC1, SRV, 5000, 6000), 0.0))
    one(r.handle("lan1", udp(SRV, WAN_ADDR, 6000, 5000), 0.0))
    outs = r.handle("lan0", big_udp(PC1, SRV, 5000, 6000, df=False), 1.0)
    assert len(outs) == 2
    err = one(r.handle("lan0", big_udp(PC1, SRV, 5000, 6000, df=True), 1.0), "lan0")
    assert err[ICMP].nexthopmtu == 1400
    assert len(r.sessions(1.0)) == 1                           # the flow's session stays
    one(r.handle("lan0", udp(PC1, SRV, 5000, 6000), 2.0), "lan1")


def test_tcp_df_segment_too_big() -> None:
    r = make_router(WAN_1400)
    one(r.handle("lan0", raw(IP(src=PC1, dst=SRV) / TCP(sport=4000, dport=443, flags="S")), 0.0))
    one(r.handle("lan1", raw(IP(src=SRV, dst=WAN_ADDR) / TCP(sport=443, dport=4000, flags="SA")), 0.0))
    seg = raw(IP(src=PC1, dst=SRV, flags="DF") / TCP(sport=4000, dport=443, flags="A") / Raw(b"d" * 1460))
    err = one(r.handle("lan0", seg, 1.0), "lan0")
    assert err.dst == PC1 and err[ICMP].nexthopmtu == 1400 and err[IPerror].sport == 4000


def test_refragmenting_a_fragment_keeps_offsets_and_mf() -> None:
    r = make_router("interface lan1 mtu 600\n")
    frags = split(big_udp(PC1, SRV, 5000, 6000, df=False, size=3000), 1480)
    outs = []
    for f in frags:
        outs += r.handle("lan0", f, 0.0)
    assert all(len(o.packet) <= 600 for o in outs)
    got = verify(reassemble([o.packet for o in outs]))
    assert got.len == 3000 and got.src == WAN_ADDR
