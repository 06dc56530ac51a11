"""strongSwan IKEv2 with NAT-T from two PCs to one server at once, ping through both tunnels.

Passes when both clients' CHILD_SAs are installed on the server as
``TUNNEL-in-UDP`` and each client's pings to the server's protected address
(10.10.0.1, reachable only through its tunnel) are answered.
"""
from __future__ import annotations

import re

from passnat.lab.scenarios.base import Check, Ctx
from passnat.lab.strongswan import PROTECTED, Charon

EVIDENCE = r"\b4500\b|\b500\b"
PINGS = 3


def two_clients(ctx: Ctx, clients: tuple[str, ...] = ("pc1", "pc2")) -> Check:
    lab = ctx.lab
    lab.run_in("srv1", ["ip", "addr", "replace", f"{PROTECTED}/32", "dev", "lo"])
    nodes = [Charon(lab, "srv1")] + [Charon(lab, c, server="srv1") for c in clients]
    try:
        for n in nodes:
            n.start()
        for n in nodes:
            n.wait_ready()
            n.load()
        inits = [n.initiate() for n in nodes[1:]]
        init_out = [p.communicate(timeout=30)[0] for p in inits]
        pings = {}
        for c in clients:
            cp = lab.run_in(c, ["ping", "-c", str(PINGS), "-i", "0.3", "-W", "2", PROTECTED], check=False,
                            timeout=20)
            m = re.search(r"(\d+) received", cp.stdout)
            pings[c] = int(m.group(1)) if m else 0
        ctx.snapshot(EVIDENCE, "IKE / NAT-T sessions")
        sas = nodes[0].list_sas()
    finally:
        for n in reversed(nodes):
            n.stop()
    installed = re.findall(r"INSTALLED, ([A-Za-z-]+)", sas)
    udp = installed.count("TUNNEL-in-UDP")
    ok = udp >= len(clients) and all(pings[c] >= PINGS - 1 for c in clients)
    details = [f"srv1 CHILD_SAs: {', '.join(installed) or 'none'}"]
    for c, out in zip(clients, init_out):
        if "successfully" not in out:
            details.append(f"{c} initiate: " + " | ".join(out.strip().splitlines()[-2:]))
    return Check(ok, ", ".join(f"{c} {pings[c]}/{PINGS} pings" for c in clients)
                 + f"; srv1: {udp} CHILD_SAs TUNNEL-in-UDP", details)
