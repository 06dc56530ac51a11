"""Session timeout: with ``nat timeout protocol udp 6``, an idle UDP mapping expires while a flow
with a keepalive every 2 s stays; the server pushes to both mappings after 11 s.

Passes when the kept flow gets the push and the idle flow does not (its
mapping is gone: the push is dropped as unsolicited), and both flows worked
at the start (echoes).
"""
from __future__ import annotations

import time

from passnat.lab.scenarios.base import Check, Ctx, finish, go, ready, result_of
from passnat.lab.topology import HOSTS

PORT = 9100
TIMEOUT = 6
PUSH_AFTER = 11.0
KEEPALIVE = 2.0


def udp_timeout(ctx: Ctx) -> Check:
    lab = ctx.lab
    srv = lab.spawn("keepalive-server", "srv1", lab.peer_argv(
        "netprobe", "keepalive-server", "--port", str(PORT), "--push-after", str(PUSH_AFTER),
        "--duration", "30", "--barrier"), pipe=True)
    ready(srv)
    cl = lab.spawn("keepalive-client", "pc1", lab.peer_argv(
        "netprobe", "keepalive-client", "--to", HOSTS["srv1"].addr, "--port", str(PORT),
        "--duration", str(PUSH_AFTER + 1.5), "--keepalive", str(KEEPALIVE), "--barrier"), pipe=True)
    go(cl)
    time.sleep(TIMEOUT + 3.0)
    ctx.snapshot(rf"\b{PORT}\b", f"UDP sessions {TIMEOUT + 3:.0f} s in (idle flow should be gone)")
    r = result_of(cl, 30)
    sv = finish(srv)
    idle, kept = r["idle"], r["kept"]
    ok = (idle["echo"] >= 1 and kept["echo"] >= 3 and idle["push"] == 0 and kept["push"] >= 1
          and len(sv["flows"]) == 2 and sv["pushed"])
    return Check(ok, f"idle flow (port {r['ports']['idle']}): {idle['echo']} echo, push received "
                 f"{idle['push']}; kept flow (port {r['ports']['kept']}, {kept['sent']} keepalives): "
                 f"push received {kept['push']}", [f"server saw flows {sv['flows']}"])
