"""Raw ESP with real ciphers (scapy): several hosts, one or two servers, a server behind SNAPT.

Verdicts (per client: ``ok`` verified replies of ``sent``, ``foreign`` ESP
packets with another host's SPI that reached it):
  * spi mode, one server: every client >= MIN_OK replies and **no** foreign
    packet anywhere -- one inbound ESP delivered to the wrong host fails it;
  * first-come (SEIL): the first client gets its replies, the others none,
    while the server did receive and answer the others' ESP (their outbound
    ESP is translated and sent; every reply goes to the first host, which
    sees them as foreign) -- SEIL's documented 先着一名 behaviour;
  * two servers: each client gets its replies, nothing foreign.
"""
from __future__ import annotations

import time
from typing import Any

from passnat.lab.proc import Proc
from passnat.lab.scenarios.base import Check, Ctx, finish, go, ready, result_of
from passnat.lab.topology import HOSTS, ROUTER_WAN

COUNT = 12
MIN_OK = 9
EVIDENCE = r"\besp\b|spi|\b50\b"


def server(ctx: Ctx, host: str) -> Proc:
    p = ctx.lab.spawn(f"esp-server-{host}", host, ctx.lab.peer_argv("esp_peer", "server", "--barrier"), pipe=True)
    ready(p)
    return p


def client(ctx: Ctx, host: str, to: str, count: int = COUNT, name: str | None = None) -> Proc:
    return ctx.lab.spawn(f"esp-client-{host}", host, ctx.lab.peer_argv(
        "esp_peer", "client", "--name", name or host, "--server", to, "--count", str(count), "--barrier"),
        pipe=True)


def line(r: dict[str, Any]) -> str:
    foreign = sum(r["foreign"].values())
    extra = f", {foreign} foreign ({', '.join(sorted(r['foreign']))})" if foreign else ""
    bad = f", {r['bad']} undecryptable" if r["bad"] else ""
    return f"{r['name']} ({r['algo']}) {r['ok']}/{r['sent']}{extra}{bad}"


def clean(r: dict[str, Any], count: int = COUNT, min_ok: int = MIN_OK) -> bool:
    return r["ok"] >= min(min_ok, count) and not r["foreign"] and not r["bad"]


def three_hosts_spi(ctx: Ctx, count: int = COUNT) -> Check:
    srv1 = HOSTS["srv1"].addr
    s = server(ctx, "srv1")
    clients = [client(ctx, h, srv1, count) for h in ("pc1", "pc2", "pc3")]
    go(*clients)
    res = [result_of(c) for c in clients]
    ctx.snapshot(EVIDENCE, "ESP sessions with all three tunnels up")
    sv = finish(s)
    ok = all(clean(r, count, count - 3) for r in res)
    return Check(ok, "; ".join(line(r) for r in res),
                 [f"srv1 decrypted {sv['decrypted']} from {sv['sources']}"])


def three_hosts_first_come(ctx: Ctx) -> Check:
    srv1 = HOSTS["srv1"].addr
    s = server(ctx, "srv1")
    first = client(ctx, "pc1", srv1, COUNT)
    late = [client(ctx, h, srv1, 8) for h in ("pc2", "pc3")]
    go(first)
    time.sleep(1.0)  # pc1 owns the server's ESP before the others start
    go(*late)
    r1 = result_of(first)
    rl = [result_of(c) for c in late]
    ctx.snapshot(EVIDENCE, "ESP sessions, first-come")
    sv = finish(s)
    dec = sv["decrypted"]
    ok = (r1["ok"] >= MIN_OK and sum(r1["foreign"].values()) >= 1
          and all(r["ok"] == 0 and dec.get(r["name"], 0) >= 4 for r in rl))
    reached = [r["name"] for r in rl if dec.get(r["name"], 0)]
    late_foreign = sum(r1["foreign"].values())
    return Check(ok, "; ".join(line(r) for r in [r1, *rl]),
                 [(f"srv1 decrypted {dec}: the late hosts' ESP reached the server: "
                   f"{', '.join(reached) or 'none'}; their replies delivered to pc1: {late_foreign}")])


def two_servers(ctx: Ctx) -> Check:
    srv1, srv2 = HOSTS["srv1"].addr, HOSTS["srv2"].addr
    s1, s2 = server(ctx, "srv1"), server(ctx, "srv2")
    c1, c2 = client(ctx, "pc1", srv1), client(ctx, "pc2", srv2)
    go(c1, c2)
    r1, r2 = result_of(c1), result_of(c2)
    ctx.snapshot(EVIDENCE, "ESP sessions, two servers")
    v1, v2 = finish(s1), finish(s2)
    ok = clean(r1) and clean(r2)
    return Check(ok, f"{line(r1)} -> srv1; {line(r2)} -> srv2",
                 [f"srv1 decrypted {v1['decrypted']}, srv2 decrypted {v2['decrypted']}"])


def server_behind_snapt(ctx: Ctx, count: int = COUNT) -> Check:
    s = server(ctx, "lansrv")
    c = client(ctx, "srv2", ROUTER_WAN, count, name="srv2")
    go(c)
    r = result_of(c)
    ctx.snapshot(EVIDENCE, "ESP published to the LAN server")
    sv = finish(s)
    src_ok = sv["sources"].get("srv2") == [HOSTS["srv2"].addr]
    ok = clean(r, count, count - 3) and src_ok
    return Check(ok, f"srv2 -> {ROUTER_WAN} -> lansrv: {line(r)}",
                 [f"lansrv decrypted {sv['decrypted']} from {sv['sources']}"])
