"""The scenarios of issue 6, in report order.  ``SCENARIOS`` is the registry; ids are stable
(tests and ``passnat lab run`` name them)."""
from __future__ import annotations

from passnat.lab.scenarios import esp, filter, ipsec, mtu, pptp, timeout, traffic
from passnat.lab.scenarios.base import Check, Ctx, Outcome, Scenario, run_scenario
from passnat.lab.variants import BASE

KERNEL_ALWAYS_REASSEMBLES = ("n/a: the kernel NAT always reassembles (conntrack defrag), "
                             "there is no requeueing switch")

SCENARIOS: list[Scenario] = [
    Scenario("traffic", "TCP/UDP through NAPT and SNAPT",
             "plain NAPT (TCP upload verified, UDP echo), TCP published by SNAPT to the LAN server, "
             "unsolicited inbound TCP dropped",
             BASE, traffic.basics, r"9201|9100|8080"),
    Scenario("pptp-same-callid", "PPTP: 2 clients, same Call ID, 1 server",
             "pc1 and pc2 both use PNS Call ID 0x1234 to pptpd on srv1; LCP echoes both ways "
             "for >= 10 s on both calls (Call-ID translation)",
             BASE, pptp.same_callid, pptp.EVIDENCE),
    Scenario("pptp-server-snapt", "PPTP server behind the router (SNAPT TCP 1723)",
             "pptp on srv2 calls pptpd on the LAN server through `nat snapt ... listen 1723`; "
             "GRE both ways without a GRE rule",
             BASE, pptp.server_behind_snapt, pptp.EVIDENCE),
    Scenario("ipsec-natt", "IPsec IKEv2 NAT-T: 2 clients, 1 server",
             "strongSwan road warriors pc1 and pc2 to srv1 at once; ping through both tunnels",
             BASE, ipsec.two_clients, ipsec.EVIDENCE),
    Scenario("esp-3hosts-spi", "Raw ESP: 3 hosts, 1 server, spi mode",
             "pc1 (AES-GCM), pc2 (AES-CBC/HMAC), pc3 (AES-GCM) to srv1 at once: each gets its own "
             "encrypted replies, none reaches another host",
             BASE, esp.three_hosts_spi, esp.EVIDENCE),
    Scenario("esp-3hosts-first-come", "Raw ESP: 3 hosts, 1 server, first-come (SEIL)",
             "`nat option esp-passthrough first-come`: pc1 came first and gets every reply; pc2 and pc3 "
             "reach the server but get nothing (SEIL's first-come-one problem)",
             BASE.with_(esp_mode="first-come"), esp.three_hosts_first_come, esp.EVIDENCE),
    Scenario("esp-2servers-spi", "Raw ESP: 2 hosts, 2 servers, spi mode",
             "pc1 -> srv1 and pc2 -> srv2 at once: independent sessions per server",
             BASE, esp.two_servers, esp.EVIDENCE),
    Scenario("esp-2servers-first-come", "Raw ESP: 2 hosts, 2 servers, first-come",
             "the same with first-come: different servers never contend (multi-session)",
             BASE.with_(esp_mode="first-come"), esp.two_servers, esp.EVIDENCE),
    Scenario("esp-server-snapt", "ESP server behind the router (SNAPT protocol 50)",
             "srv2's ESP to the router's address goes to the LAN server by `nat snapt add protocol esp`",
             BASE, esp.server_behind_snapt, esp.EVIDENCE),
    Scenario("filter-vpn", "Filter: VPN allow-list, everything else blocked",
             "the seed's allow-list (ESP, UDP 500/4500, TCP 1723, GRE): every VPN scenario passes, "
             "plain TCP out and in is blocked",
             BASE.with_(vpn_filter=True), filter.vpn_allow_list, r"gre|1723|4500|\b500\b|\besp\b|spi|\b50\b"),
    Scenario("frag-requeue-on", "Fragments out of order, requeueing on",
             "3-fragment UDP datagrams sent middle, last, first from pc1 arrive reassembled at srv1",
             BASE, mtu.requeueing_on, rf"\b{mtu.FRAG_PORT}\b"),
    Scenario("frag-requeue-off", "Fragments out of order, requeueing off",
             "`option ip fragment-requeueing off`: the same datagrams are dropped; in-order ones pass",
             BASE.with_(requeueing=False), mtu.requeueing_off, rf"\b{mtu.FRAG_PORT}\b",
             kernel_na=KERNEL_ALWAYS_REASSEMBLES),
    Scenario("pmtud", "Path MTU: WAN MTU 1400, DF packets",
             "a 1500-byte DF packet gets ICMP fragmentation-needed (mtu 1400) at pc1; path-MTU "
             "discovery lets a 2 MB TCP upload complete",
             BASE.with_(wan_mtu=mtu.WAN_MTU), mtu.pmtud, r"\b9201\b|\b9202\b"),
    Scenario("udp-timeout", "Session timeout and keepalive",
             "`nat timeout protocol udp 6`: an idle UDP mapping expires (a later push is dropped), a "
             "flow with a keepalive every 2 s keeps its mapping",
             BASE.with_(udp_timeout=timeout.TIMEOUT), timeout.udp_timeout, rf"\b{timeout.PORT}\b"),
]

BY_ID = {s.id: s for s in SCENARIOS}

__all__ = ["BY_ID", "SCENARIOS", "Check", "Ctx", "Outcome", "Scenario", "run_scenario"]
