"""Fragments and MTU: out-of-order fragments (requeueing on/off) and path-MTU discovery.

* requeueing on: 3-fragment UDP datagrams sent middle, last, first from pc1
  arrive reassembled and intact (sha256 compared) at srv1;
* requeueing off: the same datagrams never arrive, while in-order ones
  (the control, same flow) still do;
* PMTUD (WAN MTU 1400): a DF datagram of 1500 bytes from pc1 brings pc1 an
  ICMP fragmentation-needed with next-hop MTU 1400 about its own packet
  (quoted source = pc1's private address), and a TCP upload whose segments
  start at 1500 bytes completes, verified, after pc1 learned the path MTU.
"""
from __future__ import annotations

import re
import time

from passnat.lab.scenarios.base import Check, Ctx, finish, go, ready, result_of
from passnat.lab.scenarios.traffic import TCP_PORT, describe_tcp, tcp_send
from passnat.lab.topology import HOSTS

SRV1 = HOSTS["srv1"].addr
PC1 = HOSTS["pc1"].addr
FRAG_PORT = 9301
DF_PORT = 9202
COUNT = 5
WAN_MTU = 1400


def _frags(ctx: Ctx, order: str, sport: int) -> tuple[int, int]:
    sink = ctx.lab.spawn("udp-sink-srv1", "srv1", ctx.lab.peer_argv(
        "netprobe", "udp-sink", "--port", str(FRAG_PORT), "--barrier"), pipe=True)
    ready(sink)
    snd = ctx.lab.spawn("frag-send-pc1", "pc1", ctx.lab.peer_argv(
        "netprobe", "frag-send", "--to", SRV1, "--port", str(FRAG_PORT), "--src", PC1, "--order", order,
        "--count", str(COUNT), "--sport", str(sport), "--barrier"), pipe=True)
    go(snd)
    sent = result_of(snd)["sent"]
    time.sleep(0.5)
    got = finish(sink)["datagrams"]
    return sum(1 for h in sent if h in got), len(sent)


def _frag_counters(ctx: Ctx) -> list[str]:
    return [f"{k}={v}" for k, v in sorted(ctx.router.counters().items()) if "frag" in k and v]


def requeueing_on(ctx: Ctx) -> Check:
    got, sent = _frags(ctx, "1,2,0", 9310)
    ctx.snapshot(rf"\b{FRAG_PORT}\b", "UDP session of the fragmented datagrams")
    return Check(got >= COUNT - 1, f"{got}/{sent} out-of-order datagrams (fragments middle, last, first) "
                 "arrived reassembled and intact", ["router counters: " + (", ".join(_frag_counters(ctx)) or "no fragment counter above 0")])


def requeueing_off(ctx: Ctx) -> Check:
    ctrl, n1 = _frags(ctx, "0,1,2", 9311)
    got, n2 = _frags(ctx, "1,2,0", 9311)
    ctx.snapshot(rf"\b{FRAG_PORT}\b", "UDP session of the fragmented datagrams")
    return Check(ctrl >= COUNT - 1 and got == 0,
                 f"in order {ctrl}/{n1} arrived (control); out of order {got}/{n2} arrived",
                 ["router counters: " + (", ".join(_frag_counters(ctx)) or "no fragment counter above 0")])


def _route_mtu(ctx: Ctx) -> int | None:
    out = ctx.lab.run_in("pc1", ["ip", "route", "get", SRV1], check=False).stdout
    m = re.search(r"\bmtu (\d+)", out)
    return int(m.group(1)) if m else None


def pmtud(ctx: Ctx) -> Check:
    lab = ctx.lab
    lab.run_in("pc1", ["ip", "route", "flush", "cache"])
    probe = lab.spawn("df-probe-pc1", "pc1", lab.peer_argv(
        "netprobe", "df-probe", "--to", SRV1, "--port", str(DF_PORT), "--size", "1472", "--barrier"), pipe=True)
    go(probe)
    df = result_of(probe)
    icmp_ok = (df["frag_needed"] and df.get("mtu") == WAN_MTU and df.get("quoted_src") == PC1
               and df.get("quoted_dst") == SRV1 and df.get("ip_mtu") == WAN_MTU)
    df_text = (f"DF {df['size']}-byte datagram: ICMP frag-needed from {df.get('from')} mtu {df.get('mtu')} "
               f"quoting {df.get('quoted_src')} -> {df.get('quoted_dst')}; pc1 path MTU {df.get('ip_mtu')}"
               if df["frag_needed"] else f"DF {df['size']}-byte datagram: no ICMP frag-needed at pc1")
    lab.run_in("pc1", ["ip", "route", "flush", "cache"])
    before = _route_mtu(ctx)
    sink = lab.spawn("tcp-sink-srv1", "srv1", lab.peer_argv(
        "netprobe", "tcp-sink", "--port", str(TCP_PORT), "--barrier"), pipe=True)
    ready(sink)
    up = tcp_send(ctx, "pc1", SRV1, TCP_PORT, 2 << 20, timeout=20.0)
    after = _route_mtu(ctx)
    ctx.snapshot(rf"\b{TCP_PORT}\b|\b{DF_PORT}\b", "sessions of the PMTUD flows")
    finish(sink)
    tcp_ok = bool(up.get("verified")) and after == WAN_MTU
    return Check(icmp_ok and tcp_ok, f"{df_text}; TCP upload {describe_tcp(up)}, pc1 path MTU "
                 f"{before or 1500} before -> {after} after")
