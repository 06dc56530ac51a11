"""PPTP through the router: two clients with the same Call ID, and a server behind SNAPT.

The clients are real pptp-linux, the server real pptpd; both PPP ends are
the LCP-echo stand-in.  A call passes when, for its whole duration, LCP
echoes flow both ways: the client's requests are answered (``got_rep``,
replies carrying its own tag -- a reply with another call's tag is
``foreign`` and fails it), the server's requests reach the client
(``got_req``) and the server side got its replies, from exactly this
client (its ``peer_tags``).
"""
from __future__ import annotations

import time
from typing import Any

from passnat.lab.pptp import PptpServer, start_client
from passnat.lab.scenarios.base import Check, Ctx, go, result_of
from passnat.lab.topology import HOSTS, ROUTER_WAN

CALLID = 0x1234
EVIDENCE = r"gre|1723|call"


def _server_for(results: list[dict[str, Any]], tag: str) -> dict[str, Any] | None:
    mine = [r for r in results if tag in r.get("peer_tags", {})]
    return max(mine, key=lambda r: r["got_rep"]) if mine else None


def judge(tag: str, r: dict[str, Any], servers: list[dict[str, Any]], duration: float,
          min_span: float) -> Check:
    need = max(3, int(duration * 0.7))
    srv = _server_for(servers, tag)
    srv_rep = srv["got_rep"] if srv else 0
    mixed = srv is not None and set(srv["peer_tags"]) != {tag}
    ok = (r["got_rep"] >= need and r["got_req"] >= need and srv_rep >= need and not r["foreign_rep"]
          and not mixed and r["reply_span_s"] >= min_span)
    text = (f"{tag}: {r['got_rep']}/{r['sent_req']} echo replies over {r['reply_span_s']} s, "
            f"{r['got_req']} server echoes answered")
    if r["foreign_rep"]:
        text += f", {r['foreign_rep']} replies of another call"
    if srv is None:
        text += ", no server call saw it"
    elif mixed:
        text += f", server call mixed {sorted(srv['peer_tags'])}"
    return Check(ok, text)


def calls(ctx: Ctx, server_host: str, clients: list[str], target: str, duration: float,
          callid: int | None, min_span: float) -> Check:
    srv = PptpServer(ctx.lab, server_host)
    srv.start()
    srv.wait_listening()
    procs = [start_client(ctx.lab, h, target, duration=duration, callid=callid,
                          localbind=HOSTS[h].addr) for h in clients]
    go(*procs)
    time.sleep(min(duration / 2, 5.0))
    ctx.snapshot(EVIDENCE, "PPTP calls up")
    res = [result_of(p, duration + 20) for p in procs]
    time.sleep(0.5)
    srv.stop()
    servers = srv.results()
    checks = [judge(h, r, servers, duration, min_span) for h, r in zip(clients, res)]
    return Check(all(c.ok for c in checks), "; ".join(c.summary for c in checks))


def same_callid(ctx: Ctx, duration: float = 14.0, min_span: float = 10.0) -> Check:
    """pc1 and pc2, both with PNS Call ID 0x1234, to pptpd on srv1 at once."""
    return calls(ctx, "srv1", ["pc1", "pc2"], HOSTS["srv1"].addr, duration, CALLID, min_span)


def server_behind_snapt(ctx: Ctx, duration: float = 6.0) -> Check:
    """pptpd on the LAN server, published by TCP 1723 SNAPT; pptp on srv2."""
    return calls(ctx, "lansrv", ["srv2"], ROUTER_WAN, duration, None, duration - 3.0)
