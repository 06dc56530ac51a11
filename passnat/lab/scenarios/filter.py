"""The seed's VPN allow-list (ESP, UDP 500/4500, TCP 1723, GRE) with everything else blocked on the WAN.

Every VPN scenario runs again, shortened, under the filter and must still
pass; plain TCP (outbound to srv1:9201, inbound to the published port 8080)
must fail.  The ``traffic`` scenario is the positive control: the same TCP
connections work without the filter.
"""
from __future__ import annotations

from passnat.lab.scenarios import esp, ipsec, pptp
from passnat.lab.scenarios.base import Check, Ctx
from passnat.lab.scenarios.traffic import TCP_PORT, blocked_tcp, start_sinks
from passnat.lab.topology import HOSTS, ROUTER_WAN
from passnat.lab.variants import WEB_PORT


def vpn_allow_list(ctx: Ctx) -> Check:
    parts = [
        ("PPTP 2 clients", pptp.calls(ctx, "srv1", ["pc1", "pc2"], HOSTS["srv1"].addr, 5.0, pptp.CALLID, 2.0)),
        ("PPTP server", pptp.server_behind_snapt(ctx, 5.0)),
        ("IPsec NAT-T", ipsec.two_clients(ctx)),
        ("raw ESP x3", esp.three_hosts_spi(ctx, 8)),
        ("ESP server", esp.server_behind_snapt(ctx, 8)),
    ]
    sinks = start_sinks(ctx)
    parts.append(("TCP out 9201 blocked", blocked_tcp(ctx, "pc1", HOSTS["srv1"].addr, TCP_PORT)))
    parts.append((f"TCP in {WEB_PORT} blocked", blocked_tcp(ctx, "srv2", ROUTER_WAN, WEB_PORT)))
    for p in sinks.values():
        ctx.lab.forget(p)
    return Check.all(parts)
