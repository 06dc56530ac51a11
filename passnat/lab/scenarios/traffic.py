"""Plain TCP/UDP through NAPT and SNAPT: the lab's smoke test and the filter's positive control.

Ports used on the servers (also by other scenarios): TCP 9201 sink on
srv1, UDP 9100 echo on srv1, TCP 8080 sink on the LAN server (published
by ``nat snapt ... listen 8080``).
"""
from __future__ import annotations

from passnat.lab.proc import Proc
from passnat.lab.scenarios.base import Check, Ctx, finish, go, ready, result_of
from passnat.lab.topology import HOSTS, ROUTER_WAN
from passnat.lab.variants import WEB_PORT

SRV1 = HOSTS["srv1"].addr
TCP_PORT = 9201
UDP_PORT = 9100
CLOSED_PORT = 9999


def start_sinks(ctx: Ctx) -> dict[str, Proc]:
    lab = ctx.lab
    sinks = {
        "srv1": lab.spawn("tcp-sink-srv1", "srv1", lab.peer_argv(
            "netprobe", "tcp-sink", "--port", str(TCP_PORT), "--barrier"), pipe=True),
        "lansrv": lab.spawn("tcp-sink-lansrv", "lansrv", lab.peer_argv(
            "netprobe", "tcp-sink", "--port", str(WEB_PORT), "--barrier"), pipe=True),
    }
    ready(*sinks.values())
    return sinks


def tcp_send(ctx: Ctx, host: str, to: str, port: int, nbytes: int, timeout: float = 10.0) -> dict[str, object]:
    p = ctx.lab.spawn(f"tcp-send-{host}", host, ctx.lab.peer_argv(
        "netprobe", "tcp-send", "--to", to, "--port", str(port), "--bytes", str(nbytes),
        "--timeout", str(timeout), "--barrier"), pipe=True)
    go(p)
    return result_of(p, timeout + 20)


def describe_tcp(r: dict[str, object]) -> str:
    if r.get("verified"):
        return f"{r['bytes']} bytes verified in {r['seconds']} s"
    if r.get("connected"):
        return f"connected but not verified ({r.get('error') or r.get('answer')})"
    return f"no connection ({r.get('error')})"


def blocked_tcp(ctx: Ctx, host: str, to: str, port: int, timeout: float = 3.0) -> Check:
    r = tcp_send(ctx, host, to, port, 4096, timeout=timeout)
    return Check(not r.get("verified"), f"{host} -> {to}:{port}: {describe_tcp(r)}")


def basics(ctx: Ctx) -> Check:
    lab = ctx.lab
    sinks = start_sinks(ctx)
    echo = lab.spawn("udp-echo-srv1", "srv1", lab.peer_argv(
        "netprobe", "udp-echo", "--port", str(UDP_PORT), "--barrier"), pipe=True)
    ready(echo)
    up = tcp_send(ctx, "pc1", SRV1, TCP_PORT, 1 << 20)
    ping = lab.spawn("udp-ping-pc2", "pc2", lab.peer_argv(
        "netprobe", "udp-ping", "--to", SRV1, "--port", str(UDP_PORT), "--count", "10", "--barrier"), pipe=True)
    go(ping)
    pr = result_of(ping)
    snapt = tcp_send(ctx, "srv2", ROUTER_WAN, WEB_PORT, 256 << 10)
    ctx.snapshot(rf"{TCP_PORT}|{UDP_PORT}|{WEB_PORT}", "sessions after the transfers")
    closed = tcp_send(ctx, "srv2", ROUTER_WAN, CLOSED_PORT, 1024, timeout=2.0)
    s1 = finish(sinks["srv1"])
    s2 = finish(sinks["lansrv"])
    finish(echo)
    seen1 = [c["peer"].split(":")[0] for c in s1["connections"]]
    seen2 = [c["peer"].split(":")[0] for c in s2["connections"]]
    parts = [
        ("NAPT TCP", Check(bool(up.get("verified")) and seen1 == [ROUTER_WAN],
                           f"pc1 -> srv1:{TCP_PORT} {describe_tcp(up)}; srv1 saw {seen1}")),
        ("NAPT UDP", Check(int(pr["echoes"]) >= 8, f"pc2 -> srv1:{UDP_PORT} {pr['echoes']}/{pr['sent']} echoes")),
        ("SNAPT TCP", Check(bool(snapt.get("verified")) and seen2 == [HOSTS['srv2'].addr],
                            f"srv2 -> {ROUTER_WAN}:{WEB_PORT} -> lansrv {describe_tcp(snapt)}; lansrv saw {seen2}")),
        ("unsolicited", Check(not closed.get("verified"),
                              f"srv2 -> {ROUTER_WAN}:{CLOSED_PORT} (nothing published): {describe_tcp(closed)}")),
    ]
    return Check.all(parts)
