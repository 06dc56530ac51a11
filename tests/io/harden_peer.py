"""Traffic for the hardening tests (issue 13), run inside a test namespace.

Every mode prints ``ready`` when it listens (servers) and, at the end, one JSON
line.  Every mode ends by itself: nothing here can hang a test.  Packets go only
to the addresses given on the command line (the test's namespace hosts).

  flood HOST FLOWS RATE             UDP to FLOWS distinct (source port, destination port) pairs, RATE a second
  sessions HOST TPORT UPORT SECS IV every IV seconds, a new TCP connection (one line read) and a new UDP
                                    exchange (up to 3 tries, 1 s each), each from a new source port
  serve TPORT UPORT SECS            answer every TCP connection with a line, echo every UDP datagram
  raw IFACE SPEC...                 crafted frames/packets built with scapy (see ``send_raw``)
"""
from __future__ import annotations

import json
import socket
import sys
import threading
import time


def out(**kv: object) -> None:
    print(json.dumps(kv), flush=True)


def flood(host: str, flows: int, rate: float) -> None:
    """``flows`` datagrams, each its own UDP flow: 8 source ports x destination ports 1024-65535."""
    socks = []
    for _ in range(8):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("0.0.0.0", 0))
        socks.append(s)
    start = time.monotonic()
    sent = errors = 0
    for i in range(flows):
        try:
            socks[i % 8].sendto(b"flood", (host, 1024 + (i // 8) % 64512))
            sent += 1
        except OSError:
            errors += 1
        if i % 256 == 255:
            ahead = (i + 1) / rate - (time.monotonic() - start)
            if ahead > 0:
                time.sleep(ahead)
    out(sent=sent, errors=errors, seconds=round(time.monotonic() - start, 2))


def sessions(host: str, tport: int, uport: int, seconds: float, interval: float) -> None:
    results: dict[str, list[bool]] = {"tcp": [], "udp": []}
    lock = threading.Lock()

    def tcp_try() -> None:
        ok = False
        try:
            with socket.create_connection((host, tport), timeout=5) as c:
                c.settimeout(5)
                ok = c.makefile().readline().startswith("hello")
        except OSError:
            pass
        with lock:
            results["tcp"].append(ok)

    def udp_try() -> None:
        ok = False
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("0.0.0.0", 0))
            s.settimeout(1.0)
            for attempt in range(3):  # as a resolver retries
                s.sendto(f"q{attempt}".encode(), (host, uport))
                try:
                    d, _ = s.recvfrom(2048)
                    ok = d.startswith(b"q")
                    break
                except OSError:
                    continue
        with lock:
            results["udp"].append(ok)

    threads = []
    end = time.monotonic() + seconds
    next_at = time.monotonic()
    while next_at < end:
        for fn in (tcp_try, udp_try):
            t = threading.Thread(target=fn, daemon=True)
            t.start()
            threads.append(t)
        next_at += interval
        time.sleep(max(0.0, next_at - time.monotonic()))
    for t in threads:
        t.join(12)
    out(tcp_ok=sum(results["tcp"]), tcp_tried=len(results["tcp"]),
        udp_ok=sum(results["udp"]), udp_tried=len(results["udp"]))


def serve(tport: int, uport: int, seconds: float) -> None:
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("0.0.0.0", tport))
    ls.listen(512)
    ls.settimeout(0.2)
    us = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    us.bind(("0.0.0.0", uport))
    us.settimeout(0.05)
    counts = {"tcp": 0, "udp": 0}

    def udp_loop() -> None:
        while time.monotonic() < end:
            try:
                d, a = us.recvfrom(2048)
            except OSError:
                continue
            counts["udp"] += 1
            us.sendto(d, a)

    end = time.monotonic() + seconds
    threading.Thread(target=udp_loop, daemon=True).start()
    print("ready", flush=True)
    while time.monotonic() < end:
        try:
            c, peer = ls.accept()
        except OSError:
            continue
        counts["tcp"] += 1
        try:
            c.sendall(f"hello {peer[0]}\n".encode())
        except OSError:
            pass
        c.close()
    out(**counts)


def send_raw(iface: str, specs: list[str]) -> None:
    """Crafted frames and packets (scapy), three of each; a SPEC is its words joined by "/":

      vlan/SRCMAC/DSTMAC/SRC/DST    an 802.1Q-tagged (VLAN 5) UDP datagram, on IFACE
      qinq/SRCMAC/DSTMAC/SRC/DST    an 802.1ad (S-tag 10, C-tag 5) UDP datagram, on IFACE
      ip/SRC/DST/PROTO              an IPv4 packet routed by the kernel (IP_HDRINCL): PROTO udp (to port
                                    4445), tcp-syn, icmp, esp, gre
    """
    from scapy.all import GRE, ICMP, IP, TCP, UDP, Dot1AD, Dot1Q, Ether, raw  # type: ignore[attr-defined]
    from scapy.sendrecv import sendp
    rs = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    sent = 0
    for spec in specs:
        kind, *args = spec.split("/")
        if kind in ("vlan", "qinq"):
            src_mac, dst_mac, src, dst = args
            payload = IP(src=src, dst=dst) / UDP(sport=4444, dport=4445) / b"tagged"
            tags = Dot1Q(vlan=5) if kind == "vlan" else Dot1AD(vlan=10) / Dot1Q(vlan=5)
            sendp([Ether(src=src_mac, dst=dst_mac) / tags / payload] * 3, iface=iface, verbose=False)
        else:
            src, dst, proto = args
            l4 = {"udp": UDP(sport=4444, dport=4445) / b"spoofed", "tcp-syn": TCP(sport=4444, dport=4445, flags="S"),
                  "icmp": ICMP(type=8, id=7) / b"spoofed"}
            if proto in l4:
                pkt = IP(src=src, dst=dst) / l4[proto]
            elif proto == "esp":
                pkt = IP(src=src, dst=dst, proto=50) / (b"\0\0\x30\x01\0\0\0\x01" + b"e" * 32)
            else:
                pkt = IP(src=src, dst=dst) / GRE() / b"gre-payload"
            for _ in range(3):
                rs.sendto(raw(pkt), (dst, 0))
        sent += 3
        time.sleep(0.05)
    out(sent=sent)


def main(argv: list[str]) -> None:
    mode = argv[0]
    if mode == "flood":
        flood(argv[1], int(argv[2]), float(argv[3]))
    elif mode == "sessions":
        sessions(argv[1], int(argv[2]), int(argv[3]), float(argv[4]), float(argv[5]))
    elif mode == "serve":
        serve(int(argv[1]), int(argv[2]), float(argv[3]))
    elif mode == "raw":
        send_raw(argv[1], argv[2:])
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main(sys.argv[1:])
