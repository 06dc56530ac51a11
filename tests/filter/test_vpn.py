"""VPN passthrough through a filter that blocks by default (R16, seed "filterの設定").

Issue 4's acceptance: a configuration that blocks everything inbound except
the seed's VPN list (ESP = 50, UDP 500, UDP 4500, TCP 1723, GRE = 47) lets
ESP, IKE, NAT-T, PPTP control and GRE through and blocks a TCP SYN to port
22 -- for VPN servers published behind the router (the list's destination
ports match their inbound traffic) and for VPN clients inside (the replies
pass by the state of an outbound ``state enable`` rule, or by the list
itself where the reply's destination port is the list's).
"""
from __future__ import annotations

import pytest
from scapy.all import ICMP, IP, TCP, UDP, raw  # type: ignore[attr-defined]
from scapy.layers.l2 import GRE_PPTP

import passnat
from tests.filter.vpn_helpers import esp, ike, nat_t, pptp_call
from tests.nat.helpers import (
    GW,
    PC1,
    SRV,
    WAN_ADDR,
    counters,
    gre,
    gre_call_id,
    make_router,
    one,
    tcp,
)

SEED_LIST = """\
filter add esp interface lan1 direction in action pass protocol esp
filter add ike interface lan1 direction in action pass protocol udp dstport 500
filter add nat_t interface lan1 direction in action pass protocol udp dstport 4500
filter add pptp interface lan1 direction in action pass protocol tcp dstport 1723
filter add gre interface lan1 direction in action pass protocol gre
"""
BLOCK_IN = "filter add in_block interface lan1 direction in action block logging on\n"
STATE_OUT = "filter add out interface lan1 direction out action pass state enable\n"

IPSEC_SRV, PPTP_SRV = "192.168.0.10", "192.168.0.20"
CLIENT = "198.51.100.50"
SERVERS = f"""\
nat snapt add protocol udp listen 500 forward {IPSEC_SRV} 500 interface lan1
nat snapt add protocol udp listen 4500 forward {IPSEC_SRV} 4500 interface lan1
nat snapt add protocol 50 forward {IPSEC_SRV} interface lan1
nat snapt add protocol tcp listen 1723 forward {PPTP_SRV} 1723 interface lan1
"""


def counts(r: passnat.Router) -> dict[str, int]:
    return {rule["name"]: rule["count"] for rule in r.filter_status(0.0)["rules"]}


def assert_ssh_blocked(r: passnat.Router) -> None:
    assert r.handle("lan1", tcp(CLIENT, WAN_ADDR, 40000, 22, "S"), 9.0) == []
    assert counts(r)["in_block"] == 1
    assert counters(r)["filter_block"] == 1


def test_vpn_servers_behind_a_default_block_filter() -> None:
    r = make_router(SERVERS + SEED_LIST + BLOCK_IN)
    # IPsec: IKE, NAT-T and ESP from an outside client reach the inside server, and its answers leave
    assert one(r.handle("lan1", ike(CLIENT, WAN_ADDR), 0.0), "lan0").dst == IPSEC_SRV
    one(r.handle("lan0", ike(IPSEC_SRV, CLIENT), 0.1), "lan1")
    assert one(r.handle("lan1", nat_t(CLIENT, WAN_ADDR, 0x3003), 0.2), "lan0").dst == IPSEC_SRV
    one(r.handle("lan0", nat_t(IPSEC_SRV, CLIENT, 0x4004), 0.3), "lan1")
    assert one(r.handle("lan1", esp(CLIENT, WAN_ADDR, 0x5005), 0.4), "lan0").dst == IPSEC_SRV
    assert one(r.handle("lan0", esp(IPSEC_SRV, CLIENT, 0x6006), 0.5), "lan1").src == WAN_ADDR
    # PPTP: the control connection to the published server, a call, then GRE both ways
    call = pptp_call(r, pns=("lan1", CLIENT), pac=("lan0", PPTP_SRV), pns_addr_seen=CLIENT,
                     pac_addr_seen=WAN_ADDR, sport=40001, now=1.0)
    inbound = one(r.handle("lan1", gre(CLIENT, WAN_ADDR, call.pac_id), 2.0), "lan0")
    assert inbound.dst == PPTP_SRV and gre_call_id(raw(inbound)) == call.pac_inside_id
    outbound = one(r.handle("lan0", gre(PPTP_SRV, CLIENT, call.pns_inside_id), 2.1), "lan1")
    assert outbound.src == WAN_ADDR
    assert_ssh_blocked(r)
    c = counts(r)
    assert (c["ike"], c["nat_t"], c["esp"], c["gre"], c["pptp"]) == (1, 1, 1, 1, 2)


@pytest.mark.parametrize("extra", [STATE_OUT, ""], ids=["state", "list-only"])
def test_ipsec_and_nat_t_clients_inside(extra: str) -> None:
    """IKE and NAT-T keep their ports, so the replies match the list's destination ports."""
    r = make_router(SEED_LIST + extra + BLOCK_IN)
    one(r.handle("lan0", ike(PC1, SRV), 0.0), "lan1")
    back = one(r.handle("lan1", ike(SRV, WAN_ADDR), 0.1), "lan0")
    assert back.dst == PC1 and back[UDP].dport == 500
    one(r.handle("lan0", nat_t(PC1, SRV, 0x1001), 0.2), "lan1")
    assert one(r.handle("lan1", nat_t(SRV, WAN_ADDR, 0x2002), 0.3), "lan0").dst == PC1
    one(r.handle("lan0", esp(PC1, SRV, 0x1001), 0.4), "lan1")
    assert one(r.handle("lan1", esp(SRV, WAN_ADDR, 0x2002), 0.5), "lan0").dst == PC1
    for t in range(10):                                     # the tunnel keeps flowing both ways
        one(r.handle("lan0", esp(PC1, SRV, 0x1001, 2 + t), 1.0 + t), "lan1")
        one(r.handle("lan1", esp(SRV, WAN_ADDR, 0x2002, 2 + t), 1.0 + t), "lan0")
    assert_ssh_blocked(r)


def test_pptp_client_inside_with_a_stateful_outbound_rule() -> None:
    r = make_router(SEED_LIST + STATE_OUT + BLOCK_IN)
    call = pptp_call(r, pns=("lan0", PC1), pac=("lan1", SRV), pns_addr_seen=WAN_ADDR, pac_addr_seen=SRV)
    one(r.handle("lan0", gre(PC1, SRV, call.pac_id), 1.0), "lan1")
    back = one(r.handle("lan1", gre(SRV, WAN_ADDR, call.pns_id), 1.1), "lan0")
    assert back.dst == PC1 and back[GRE_PPTP].call_id == call.pns_inside_id
    for t in range(5):                                       # control keepalives: the state passes the replies
        one(r.handle("lan1", tcp(SRV, WAN_ADDR, 1723, 4000, "A"), 2.0 + t), "lan0")
    assert_ssh_blocked(r)


def test_pptp_client_inside_needs_the_replies_passed() -> None:
    """The seed's "TCP 1723" is the destination port of the client's packets: the server's
    replies come from port 1723 and need a state (above) or a rule of their own."""
    r = make_router(SEED_LIST + BLOCK_IN)
    one(r.handle("lan0", tcp(PC1, SRV, 4000, 1723, "S"), 0.0), "lan1")
    assert r.handle("lan1", tcp(SRV, WAN_ADDR, 1723, 4000, "SA"), 0.1) == []
    r = make_router(SEED_LIST + "filter add pptp_back interface lan1 direction in action pass protocol tcp "
                    "srcport 1723\n" + BLOCK_IN)
    call = pptp_call(r, pns=("lan0", PC1), pac=("lan1", SRV), pns_addr_seen=WAN_ADDR, pac_addr_seen=SRV)
    assert one(r.handle("lan1", gre(SRV, WAN_ADDR, call.pns_id), 1.0), "lan0").dst == PC1
    assert_ssh_blocked(r)


def test_filter_default_block_with_in_out_rules() -> None:
    """``filter default block`` and the VPN list on both directions of every interface."""
    text = SEED_LIST.replace("interface lan1 direction in", "interface any direction in/out")
    r = make_router(text + "filter add pptp_back interface any direction in/out action pass protocol tcp "
                    "srcport 1723\nfilter default block\n")
    one(r.handle("lan0", ike(PC1, SRV), 0.0), "lan1")
    one(r.handle("lan1", ike(SRV, WAN_ADDR), 0.0), "lan0")
    one(r.handle("lan0", esp(PC1, SRV, 0x1001), 0.0), "lan1")
    one(r.handle("lan1", esp(SRV, WAN_ADDR, 0x2002), 0.0), "lan0")
    call = pptp_call(r, pns=("lan0", PC1), pac=("lan1", SRV), pns_addr_seen=WAN_ADDR, pac_addr_seen=SRV)
    one(r.handle("lan0", gre(PC1, SRV, call.pac_id), 1.0), "lan1")
    one(r.handle("lan1", gre(SRV, WAN_ADDR, call.pns_id), 1.0), "lan0")
    assert r.handle("lan0", tcp(PC1, SRV, 4001, 22, "S"), 2.0) == []        # not on the list: either way
    assert r.handle("lan1", tcp(CLIENT, WAN_ADDR, 40000, 22, "S"), 2.0) == []
    assert r.filter_status(2.0)["default"]["blocked"] == 2


def test_icmp_fragmentation_needed_reaches_a_client_through_the_stateful_filter() -> None:
    """Path MTU discovery for a VPN (B5): the router's own error, and one from the path."""
    r = make_router(SEED_LIST + STATE_OUT + BLOCK_IN + "interface lan1 mtu 1400\n")
    big = raw(IP(src=PC1, dst=SRV, flags="DF") / UDP(sport=4500, dport=4500) / (b"\0\0\x10\x01" + b"x" * 1468))
    err = one(r.handle("lan0", big, 0.0), "lan0")
    assert err.dst == PC1 and err[ICMP].nexthopmtu == 1400
    sent = one(r.handle("lan0", nat_t(PC1, SRV, 0x1001), 0.1), "lan1")
    path_err = raw(IP(src=GW, dst=WAN_ADDR) / ICMP(type=3, code=4, nexthopmtu=1280) / raw(sent)[:28])
    back = one(r.handle("lan1", path_err, 0.2), "lan0")
    assert back.dst == PC1 and back[ICMP].nexthopmtu == 1280
    assert TCP not in back
