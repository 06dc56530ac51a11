"""Small traffic tools for the lab's scenarios; one subcommand each, JSON result on stdout.

    tcp-sink  --port P [--duration S]         accept, read to EOF, answer "<bytes> <sha256>"
    tcp-send  --to A --port P --bytes N       send N deterministic bytes, check the sink's answer
    (tcp-send --rate B: paced, B bytes/s)
    udp-echo  --port P [--duration S]         echo every datagram
    udp-flow  --to A --port P [--interval S]  one datagram every S s from one port for --duration: echoes, longest gap
    udp-ping  --to A --port P [--count N]     N datagrams, count the echoes
    udp-sink  --port P [--duration S]         record the sha256 of every datagram
    frag-send --to A --port P --order 1,2,0   3-fragment UDP datagrams, fragments in that order
    df-probe  --to A --port P --size N        one DF datagram; report ICMP frag-needed and IP_MTU
    keepalive-server --port P --push-after S  echo; S s after the first datagram push to every flow seen
    keepalive-client --to A --port P          an idle flow and a kept-alive flow; report pushes received

Everything is bounded in time (``--duration``/``--timeout``) and ends on SIGTERM
with its summary.  Payloads are deterministic so both ends can be compared.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import select
import socket
import struct
import sys
import time
from typing import Any

from passnat.lab.peers.common import StopFlag, barrier, result

IP_MTU_DISCOVER = 10
IP_PMTUDISC_DO = 2
IP_MTU = 14


def payload(n: int, seed: str) -> bytes:
    out = bytearray()
    block = hashlib.sha256(seed.encode()).digest()
    while len(out) < n:
        block = hashlib.sha256(block).digest()
        out += block
    return bytes(out[:n])


def _listen_tcp(port: int) -> socket.socket:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(16)
    return s


def tcp_sink(a: argparse.Namespace) -> None:
    ls = _listen_tcp(a.port)
    barrier(a.barrier)
    stop = StopFlag()
    conns: dict[socket.socket, tuple[str, Any, int]] = {}
    done: list[dict[str, Any]] = []
    t_end = time.monotonic() + a.duration
    while not stop and time.monotonic() < t_end:
        r, _, _ = select.select([ls, *conns], [], [], 0.2)
        for s in r:
            if s is ls:
                c, (addr, port) = ls.accept()
                conns[c] = (f"{addr}:{port}", hashlib.sha256(), 0)
                continue
            peer, h, n = conns[s]
            try:
                data = s.recv(65536)
            except OSError:
                data = b""
            if data:
                h.update(data)
                conns[s] = (peer, h, n + len(data))
                continue
            try:
                s.sendall(f"{n} {h.hexdigest()}\n".encode())
            except OSError:
                pass
            s.close()
            del conns[s]
            done.append({"peer": peer, "bytes": n, "sha256": h.hexdigest()})
    result({"role": "tcp-sink", "connections": done})


def tcp_send(a: argparse.Namespace) -> None:
    data = payload(a.bytes, f"tcp {a.bytes}")
    want = f"{len(data)} {hashlib.sha256(data).hexdigest()}"
    barrier(a.barrier)
    t0 = time.monotonic()
    out: dict[str, Any] = {"role": "tcp-send", "to": f"{a.to}:{a.port}", "bytes": len(data),
                           "connected": False, "verified": False}
    s = socket.socket()
    s.settimeout(a.timeout)
    try:
        s.connect((a.to, a.port))
        out["connected"] = True
        out["local_port"] = s.getsockname()[1]
        if a.rate:
            chunk = max(1024, int(a.rate / 20))
            for i in range(0, len(data), chunk):
                wait = t0 + i / a.rate - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                s.sendall(data[i:i + chunk])
        else:
            s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        answer = b""
        while not answer.endswith(b"\n"):
            chunk = s.recv(4096)
            if not chunk:
                break
            answer += chunk
        out["answer"] = answer.decode(errors="replace").strip()
        out["verified"] = out["answer"] == want
    except OSError as e:
        out["error"] = f"{type(e).__name__}: {e}"
    finally:
        s.close()
    out["seconds"] = round(time.monotonic() - t0, 3)
    result(out)


def _udp_bound(port: int) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", port))
    return s


def udp_echo(a: argparse.Namespace) -> None:
    s = _udp_bound(a.port)
    barrier(a.barrier)
    stop = StopFlag()
    n = 0
    sources: set[str] = set()
    t_end = time.monotonic() + a.duration
    while not stop and time.monotonic() < t_end:
        r, _, _ = select.select([s], [], [], 0.2)
        if r:
            data, src = s.recvfrom(65535)
            s.sendto(data, src)
            n += 1
            sources.add(f"{src[0]}:{src[1]}")
    result({"role": "udp-echo", "echoed": n, "sources": sorted(sources)})


def udp_flow(a: argparse.Namespace) -> None:
    """A steady flow from one socket: a datagram every ``interval`` s, echoes counted and timed."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", 0))
    barrier(a.barrier)
    stop = StopFlag()
    t0 = time.monotonic()
    sent = got = 0
    last: float | None = None
    gap = 0.0
    nxt = t0
    while not stop and time.monotonic() < t0 + a.duration:
        now = time.monotonic()
        if now >= nxt:
            s.sendto(b"flow %d" % sent, (a.to, a.port))
            sent += 1
            nxt += a.interval
        r, _, _ = select.select([s], [], [], max(0.0, min(0.05, nxt - time.monotonic())))
        if r:
            s.recvfrom(65535)
            got += 1
            now = time.monotonic()
            if last is not None:
                gap = max(gap, now - last)
            last = now
    result({"role": "udp-flow", "sent": sent, "got": got, "max_gap_s": round(gap, 3),
            "local_port": s.getsockname()[1]})


def udp_ping(a: argparse.Namespace) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    if a.sport:
        s.bind(("0.0.0.0", a.sport))
    s.connect((a.to, a.port))
    barrier(a.barrier)
    got: set[int] = set()
    for i in range(a.count):
        s.send(f"ping {i}".encode())
        t_end = time.monotonic() + a.interval
        while time.monotonic() < t_end:
            r, _, _ = select.select([s], [], [], max(0.0, t_end - time.monotonic()))
            if not r:
                break
            try:
                data = s.recv(65535)
            except OSError:
                continue
            if data.startswith(b"ping "):
                got.add(int(data[5:]))
    result({"role": "udp-ping", "sent": a.count, "echoes": len(got)})


def udp_sink(a: argparse.Namespace) -> None:
    s = _udp_bound(a.port)
    barrier(a.barrier)
    stop = StopFlag()
    seen: list[str] = []
    t_end = time.monotonic() + a.duration
    while not stop and time.monotonic() < t_end:
        r, _, _ = select.select([s], [], [], 0.2)
        if r:
            data, _ = s.recvfrom(65535)
            seen.append(hashlib.sha256(data).hexdigest())
    result({"role": "udp-sink", "datagrams": seen})


def frag_send(a: argparse.Namespace) -> None:
    from scapy.layers.inet import IP, UDP, fragment

    order = [int(x) for x in a.order.split(",")]
    src = a.src
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    barrier(a.barrier)
    sent = []
    for i in range(a.count):
        data = payload(a.size, f"frag {a.order} {i} {os.getpid()}")
        pkt = IP(src=src, dst=a.to, id=((os.getpid() << 4) + i) % 0xFFFF + 1) / UDP(sport=a.sport, dport=a.port) / data
        frags = fragment(pkt, fragsize=a.fragsize)  # type: ignore[no-untyped-call]
        if len(frags) != len(order):
            raise SystemExit(f"datagram made {len(frags)} fragments, order names {len(order)}")
        for k in order:
            raw.sendto(bytes(frags[k]), (a.to, 0))
        sent.append(hashlib.sha256(data).hexdigest())
        time.sleep(a.interval)
    result({"role": "frag-send", "order": order, "fragments": len(order), "sent": sent})


def df_probe(a: argparse.Namespace) -> None:
    icmp = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO)
    s.connect((a.to, a.port))
    barrier(a.barrier)
    out: dict[str, Any] = {"role": "df-probe", "size": a.size + 28, "frag_needed": False}
    try:
        s.send(payload(a.size, "df"))
        out["sent"] = True
    except OSError as e:
        out["sent"] = False
        out["send_error"] = str(e)
    t_end = time.monotonic() + a.timeout
    while time.monotonic() < t_end and not out["frag_needed"]:
        r, _, _ = select.select([icmp], [], [], max(0.0, t_end - time.monotonic()))
        if not r:
            break
        data, (src, _) = icmp.recvfrom(65535)
        ihl = (data[0] & 15) * 4
        typ, code = data[ihl], data[ihl + 1]
        if typ == 3 and code == 4:
            mtu = struct.unpack("!H", data[ihl + 6:ihl + 8])[0]
            inner = data[ihl + 8:]
            q_src = socket.inet_ntoa(inner[12:16])
            q_dst = socket.inet_ntoa(inner[16:20])
            out.update(frag_needed=True, from_=src, mtu=mtu, quoted_src=q_src, quoted_dst=q_dst)
    try:
        out["ip_mtu"] = s.getsockopt(socket.IPPROTO_IP, IP_MTU)
    except OSError:
        out["ip_mtu"] = None
    out["from"] = out.pop("from_", None)
    result(out)


def keepalive_server(a: argparse.Namespace) -> None:
    s = _udp_bound(a.port)
    barrier(a.barrier)
    stop = StopFlag()
    flows: dict[str, tuple[str, int]] = {}
    first: float | None = None
    pushed = False
    t_end = time.monotonic() + a.duration
    while not stop and time.monotonic() < t_end:
        now = time.monotonic()
        if first is not None and not pushed and now >= first + a.push_after:
            for tag, addr in flows.items():
                s.sendto(f"push {tag}".encode(), addr)
            pushed = True
        r, _, _ = select.select([s], [], [], 0.1)
        if r:
            data, src = s.recvfrom(65535)
            tag = data.decode(errors="replace").split()[-1]
            flows.setdefault(tag, src)
            first = time.monotonic() if first is None else first
            s.sendto(data, src)
    result({"role": "keepalive-server", "flows": {k: f"{v[0]}:{v[1]}" for k, v in flows.items()},
            "pushed": pushed})


def keepalive_client(a: argparse.Namespace) -> None:
    idle = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    kept = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for s in (idle, kept):
        s.connect((a.to, a.port))
    barrier(a.barrier)
    stats = {"idle": {"echo": 0, "push": 0, "sent": 0}, "kept": {"echo": 0, "push": 0, "sent": 0}}
    socks = {idle: "idle", kept: "kept"}
    t0 = time.monotonic()
    nxt = t0
    idle.send(b"hello idle")
    stats["idle"]["sent"] += 1
    stop = StopFlag()
    while not stop and time.monotonic() < t0 + a.duration:
        now = time.monotonic()
        if now >= nxt:
            kept.send(b"keepalive kept")
            stats["kept"]["sent"] += 1
            nxt = now + a.keepalive
        r, _, _ = select.select(list(socks), [], [], max(0.0, min(nxt - time.monotonic(), 0.2)))
        for s in r:
            try:
                data = s.recv(65535)
            except OSError:
                continue
            tag = socks[s]
            stats[tag]["push" if data.startswith(b"push") else "echo"] += 1
    result({"role": "keepalive-client", **stats,
            "ports": {"idle": idle.getsockname()[1], "kept": kept.getsockname()[1]}})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="netprobe")
    sub = ap.add_subparsers(dest="cmd", required=True)

    def add(name: str, fn: Any, **defaults: Any) -> argparse.ArgumentParser:
        p = sub.add_parser(name)
        p.set_defaults(fn=fn)
        p.add_argument("--barrier", action="store_true")
        p.add_argument("--duration", type=float, default=defaults.get("duration", 60.0))
        p.add_argument("--timeout", type=float, default=defaults.get("timeout", 10.0))
        p.add_argument("--port", type=int, required=True)
        p.add_argument("--to")
        return p

    add("tcp-sink", tcp_sink)
    p = add("tcp-send", tcp_send)
    p.add_argument("--bytes", type=int, default=1 << 20)
    p.add_argument("--rate", type=float, default=0.0, help="bytes per second (0: as fast as it goes)")
    add("udp-echo", udp_echo)
    p = add("udp-flow", udp_flow)
    p.add_argument("--interval", type=float, default=0.05)
    p = add("udp-ping", udp_ping)
    p.add_argument("--count", type=int, default=10)
    p.add_argument("--interval", type=float, default=0.2)
    p.add_argument("--sport", type=int, default=0)
    add("udp-sink", udp_sink)
    p = add("frag-send", frag_send)
    p.add_argument("--order", default="1,2,0")
    p.add_argument("--count", type=int, default=5)
    p.add_argument("--size", type=int, default=2400)
    p.add_argument("--fragsize", type=int, default=1000)
    p.add_argument("--interval", type=float, default=0.1)
    p.add_argument("--sport", type=int, default=9300)
    p.add_argument("--src", required=True)
    p = add("df-probe", df_probe, timeout=3.0)
    p.add_argument("--size", type=int, default=1472)
    p = add("keepalive-server", keepalive_server)
    p.add_argument("--push-after", type=float, default=11.0)
    p = add("keepalive-client", keepalive_client, duration=12.5)
    p.add_argument("--keepalive", type=float, default=2.0)
    a = ap.parse_args(argv)
    a.fn(a)
    return 0


if __name__ == "__main__":
    sys.exit(main())
