"""Raw ESP (IP protocol 50, no UDP) with real ciphers, made and checked by scapy.

    server: python -m passnat.lab.peers.esp_peer server [--duration S]
    client: python -m passnat.lab.peers.esp_peer client --name pc1 --server ADDR
                 [--count N] [--interval S] [--algo gcm|cbc] [--barrier]

Static keys, tunnel mode, no IKE (strongSwan's userspace ESP always uses
NAT-T, so raw ESP comes from here).  Each peer name has its own SPI pair and
its own keys (``PEERS``), so a packet delivered to the wrong host cannot be
decrypted there and is counted as *foreign* by SPI.

The server decrypts every ESP packet whose SPI it knows, and answers with an
encrypted ICMP echo reply to the **outer source it saw** (the NAT's address).
The client sends ``count`` echo requests (inner 10.20.0.x -> 10.10.0.1,
payload ``<name> #<seq>``), decrypts what comes back and reports:
``{"name", "sent", "ok": unique verified replies, "foreign": {spi: n}, "bad": n}``.
A client's raw socket sees every ESP packet reaching its host, which is what
makes the foreign count meaningful.
"""
from __future__ import annotations

import argparse
import hashlib
import select
import socket
import sys
import time
from collections import Counter
from typing import Any

from scapy.layers.inet import ICMP, IP
from scapy.layers.ipsec import ESP, IPSecIntegrityError, SecurityAssociation
from scapy.packet import Raw

from passnat.lab.peers.common import StopFlag, barrier, result

INNER_SERVER = "10.10.0.1"
#: name: (SPI client->server, SPI server->client, inner address, default algorithm)
PEERS: dict[str, tuple[int, int, str, str]] = {
    "pc1": (0x1001, 0x1002, "10.20.0.11", "gcm"),
    "pc2": (0x2001, 0x2002, "10.20.0.12", "cbc"),
    "pc3": (0x3001, 0x3002, "10.20.0.13", "gcm"),
    "srv2": (0x4001, 0x4002, "10.20.0.20", "cbc"),
}
ALGOS = ("gcm", "cbc")


def keys(name: str) -> tuple[bytes, bytes, bytes]:
    """(AES-128-CBC key, HMAC-SHA2-256 key, AES-128-GCM key + 4-byte salt) of one peer."""
    k = hashlib.sha256(b"passnat-lab-esp " + name.encode()).digest()
    a = hashlib.sha256(b"passnat-lab-auth " + name.encode()).digest()
    return k[:16], a, k[16:32] + a[:4]


def make_sa(name: str, spi: int, algo: str) -> SecurityAssociation:
    cbc, auth, gcm = keys(name)
    # the outer header is written by the kernel (raw socket); scapy only needs one for tunnel mode
    hdr = IP(src="0.0.0.0", dst="0.0.0.0")
    if algo == "gcm":
        return SecurityAssociation(ESP, spi=spi, crypt_algo="AES-GCM",  # type: ignore[no-untyped-call]
                                   crypt_key=gcm, auth_algo="NULL", auth_key=None, tunnel_header=hdr)
    return SecurityAssociation(ESP, spi=spi, crypt_algo="AES-CBC",  # type: ignore[no-untyped-call]
                               crypt_key=cbc, auth_algo="SHA2-256-128", auth_key=auth, tunnel_header=hdr)


def esp_socket() -> socket.socket:
    return socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ESP)


def send_esp(s: socket.socket, pkt: Any, dst: str) -> None:
    s.sendto(bytes(pkt[ESP]), (dst, 0))


def server(args: argparse.Namespace) -> int:
    s = esp_socket()
    by_spi = {v[0]: k for k, v in PEERS.items()}
    stop = StopFlag()
    decrypted: Counter[str] = Counter()
    sources: dict[str, set[str]] = {}
    unknown: Counter[str] = Counter()
    failed = 0
    barrier(args.barrier)
    t_end = time.monotonic() + args.duration
    while not stop and time.monotonic() < t_end:
        r, _, _ = select.select([s], [], [], 0.2)
        if not r:
            continue
        data, (src, _) = s.recvfrom(65535)
        outer = IP(data)
        if ESP not in outer:
            continue
        spi = outer[ESP].spi
        name = by_spi.get(spi)
        if name is None:
            unknown[f"{spi:#x}"] += 1
            continue
        spi_out, spi_back, _, _ = PEERS[name]
        inner = None
        algo = ALGOS[0]
        for algo in ALGOS:
            try:
                inner = make_sa(name, spi_out, algo).decrypt(outer.copy())  # type: ignore[no-untyped-call]
                break
            except (IPSecIntegrityError, ValueError):  # wrong algorithm or corrupted: try the other
                inner = None
        if inner is None or ICMP not in inner or inner[ICMP].type != 8:
            failed += 1
            continue
        decrypted[name] += 1
        sources.setdefault(name, set()).add(src)
        reply = (IP(src=inner.dst, dst=inner.src) / ICMP(type=0, id=inner[ICMP].id, seq=inner[ICMP].seq)
                 / inner[ICMP].payload)
        send_esp(s, make_sa(name, spi_back, algo).encrypt(reply, seq_num=inner[ICMP].seq), src)  # type: ignore[no-untyped-call]
    result({"role": "server", "decrypted": dict(decrypted), "unknown_spi": dict(unknown),
            "failed": failed, "sources": {k: sorted(v) for k, v in sources.items()}})
    return 0


def client(args: argparse.Namespace) -> int:
    spi_out, spi_in, inner_addr, default_algo = PEERS[args.name]
    algo = args.algo or default_algo
    sa_out = make_sa(args.name, spi_out, algo)
    sa_in = make_sa(args.name, spi_in, algo)
    s = esp_socket()
    stop = StopFlag()
    ok: set[int] = set()
    foreign: Counter[str] = Counter()
    bad = 0
    barrier(args.barrier)
    t0 = time.monotonic()
    sent = 0
    first_reply: float | None = None
    last_reply: float | None = None
    max_gap = 0.0
    while not stop:
        now = time.monotonic()
        if sent < args.count and now >= t0 + sent * args.interval:
            sent += 1
            inner = (IP(src=inner_addr, dst=INNER_SERVER) / ICMP(type=8, id=0x4242, seq=sent)
                     / Raw(f"{args.name} #{sent}".encode()))
            send_esp(s, sa_out.encrypt(inner, seq_num=sent), args.server)  # type: ignore[no-untyped-call]
            continue
        if sent >= args.count and now >= t0 + (sent - 1) * args.interval + args.wait:
            break
        r, _, _ = select.select([s], [], [], 0.05)
        if not r:
            continue
        data, _ = s.recvfrom(65535)
        outer = IP(data)
        if ESP not in outer:
            continue
        spi = outer[ESP].spi
        if spi != spi_in:
            foreign[f"{spi:#x}"] += 1
            continue
        try:
            rep = sa_in.decrypt(outer.copy())  # type: ignore[no-untyped-call]
        except (IPSecIntegrityError, ValueError):  # integrity failure: not ours after all
            bad += 1
            continue
        want = f"{args.name} #{rep[ICMP].seq}".encode() if ICMP in rep else b""
        if ICMP in rep and rep[ICMP].type == 0 and Raw in rep and bytes(rep[Raw].load) == want:
            ok.add(rep[ICMP].seq)
            t_rep = time.monotonic() - t0
            if first_reply is None:
                first_reply = t_rep
            if last_reply is not None:
                max_gap = max(max_gap, t_rep - last_reply)
            last_reply = t_rep
        else:
            bad += 1
    result({"role": "client", "name": args.name, "algo": algo, "sent": sent, "ok": len(ok),
            "foreign": dict(foreign), "bad": bad, "spi_out": f"{spi_out:#x}", "spi_in": f"{spi_in:#x}",
            "first_reply_s": None if first_reply is None else round(first_reply, 3),
            "max_gap_s": round(max_gap, 3)})
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="esp_peer")
    ap.add_argument("mode", choices=["server", "client"])
    ap.add_argument("--name", choices=sorted(PEERS), default="pc1")
    ap.add_argument("--server", default="203.0.113.10")
    ap.add_argument("--algo", choices=ALGOS)
    ap.add_argument("--count", type=int, default=8)
    ap.add_argument("--interval", type=float, default=0.25)
    ap.add_argument("--wait", type=float, default=2.0, help="seconds to wait for replies after the last send")
    ap.add_argument("--duration", type=float, default=120.0, help="server: stop after this many seconds")
    ap.add_argument("--barrier", action="store_true")
    a = ap.parse_args(argv)
    return server(a) if a.mode == "server" else client(a)


if __name__ == "__main__":
    sys.exit(main())
