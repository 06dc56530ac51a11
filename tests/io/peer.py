"""Traffic endpoints for the integration tests, run inside a namespace (stdlib only).

Each mode prints ``ready`` once it listens (servers) and, at the end, one JSON
line with what it saw.  Every mode has a timeout: nothing here can hang a test.

  tcp-sink PORT                 receive one connection until EOF: bytes, sha256, peer, peer_port
  tcp-send HOST PORT N [RATE]   send N random bytes (RATE bytes/s, 0 = unlimited): bytes, sha256
  tcp-serve PORT N              send N random bytes to one connection: bytes, sha256, peer
  tcp-fetch HOST PORT           receive until EOF: bytes, sha256
  tcp-hello PORT                answer one connection with "hello <peer address>"
  tcp-connect HOST PORT         connect and read one line: ok / errno name
  tcp-probe HOST PORT           connect: ok / errno name, and how many seconds the answer took
  udp-probe HOST PORT           one datagram on a connected socket: reply / refused (ICMP) / timeout, seconds
  udp-echo PORT SECONDS         echo datagrams: count, peers
  udp-ping HOST PORT N [SPORT]  send N datagrams, count replies: sent, received, local port
  udp-listen PORT SECONDS       count datagrams received
  udp-hold PORT HOST HPORT SECS open a mapping (one datagram to HOST:HPORT), then count what comes back
  udp-send HOST PORT N TEXT [SPORT]  send N datagrams "TEXT i" (from SPORT)
  udp-flood HOST PORT SECONDS   send small datagrams as fast as possible: sent
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import socket
import sys
import time


def out(**kv: object) -> None:
    print(json.dumps(kv), flush=True)


def ready() -> None:
    print("ready", flush=True)


def listener(port: int) -> socket.socket:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(4)
    s.settimeout(60)
    return s


def recv_all(c: socket.socket) -> tuple[int, str]:
    h = hashlib.sha256()
    n = 0
    while True:
        d = c.recv(1 << 16)
        if not d:
            return n, h.hexdigest()
        h.update(d)
        n += len(d)


def send_data(c: socket.socket, n: int, rate: float = 0.0) -> str:
    h = hashlib.sha256()
    sent = 0
    start = time.monotonic()
    chunk = 64 * 1024
    while sent < n:
        block = os.urandom(min(chunk, n - sent))
        c.sendall(block)
        h.update(block)
        sent += len(block)
        if rate:
            ahead = sent / rate - (time.monotonic() - start)
            if ahead > 0:
                time.sleep(ahead)
    return h.hexdigest()


def main(argv: list[str]) -> None:
    mode = argv[0]
    if mode == "tcp-sink":
        s = listener(int(argv[1]))
        ready()
        c, peer = s.accept()
        c.settimeout(60)
        n, digest = recv_all(c)
        out(bytes=n, sha256=digest, peer=peer[0], peer_port=peer[1])
    elif mode == "tcp-send":
        c = socket.create_connection((argv[1], int(argv[2])), timeout=30)
        digest = send_data(c, int(argv[3]), float(argv[4]) if len(argv) > 4 else 0.0)
        c.shutdown(socket.SHUT_WR)
        c.recv(1)
        out(bytes=int(argv[3]), sha256=digest, local_port=c.getsockname()[1])
    elif mode == "tcp-serve":
        s = listener(int(argv[1]))
        ready()
        c, peer = s.accept()
        c.settimeout(60)
        digest = send_data(c, int(argv[2]))
        c.close()
        out(bytes=int(argv[2]), sha256=digest, peer=peer[0])
    elif mode == "tcp-fetch":
        c = socket.create_connection((argv[1], int(argv[2])), timeout=30)
        n, digest = recv_all(c)
        out(bytes=n, sha256=digest)
    elif mode == "tcp-hello":
        s = listener(int(argv[1]))
        ready()
        c, peer = s.accept()
        c.sendall(f"hello {peer[0]}\n".encode())
        c.close()
        out(peer=peer[0])
    elif mode == "tcp-connect":
        try:
            c = socket.create_connection((argv[1], int(argv[2])), timeout=15)
            out(ok=True, line=c.makefile().readline().strip())
        except OSError as e:
            out(ok=False, errno=errno.errorcode.get(e.errno or 0, str(e)))
    elif mode == "tcp-probe":
        start = time.monotonic()
        try:
            c = socket.create_connection((argv[1], int(argv[2])), timeout=10)
            c.close()
            out(ok=True, seconds=round(time.monotonic() - start, 3))
        except OSError as e:
            out(ok=False, errno=errno.errorcode.get(e.errno or 0, str(e)), seconds=round(time.monotonic() - start, 3))
    elif mode == "udp-probe":
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.connect((argv[1], int(argv[2])))
        s.settimeout(3.0)
        start = time.monotonic()
        s.send(b"probe")
        try:
            s.recv(65536)
            result = "reply"
        except ConnectionRefusedError:
            result = "refused"
        except TimeoutError:
            result = "timeout"
        out(result=result, seconds=round(time.monotonic() - start, 3))
    elif mode == "udp-echo":
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("0.0.0.0", int(argv[1])))
        s.settimeout(0.2)
        ready()
        end = time.monotonic() + float(argv[2])
        count, peers = 0, set()
        while time.monotonic() < end:
            try:
                d, a = s.recvfrom(65536)
            except TimeoutError:
                continue
            count += 1
            peers.add(f"{a[0]}:{a[1]}")
            s.sendto(d, a)
        out(count=count, peers=sorted(peers))
    elif mode == "udp-ping":
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("0.0.0.0", int(argv[4]) if len(argv) > 4 else 0))
        s.settimeout(0.5)
        n, got = int(argv[3]), set()
        for i in range(n):
            s.sendto(f"ping {i}".encode(), (argv[1], int(argv[2])))
            try:
                while True:
                    d, _ = s.recvfrom(65536)
                    got.add(d)
                    if d == f"ping {i}".encode():
                        break
            except TimeoutError:
                pass
        out(sent=n, received=len(got), local_port=s.getsockname()[1])
    elif mode == "udp-listen":
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("0.0.0.0", int(argv[1])))
        s.settimeout(0.2)
        ready()
        end = time.monotonic() + float(argv[2])
        count = 0
        while time.monotonic() < end:
            try:
                s.recvfrom(65536)
                count += 1
            except TimeoutError:
                pass
        out(count=count)
    elif mode == "udp-hold":
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("0.0.0.0", int(argv[1])))
        s.settimeout(0.2)
        s.sendto(b"open", (argv[2], int(argv[3])))
        ready()
        end = time.monotonic() + float(argv[4])
        seen: dict[str, int] = {}
        while time.monotonic() < end:
            try:
                d, _ = s.recvfrom(65536)
            except TimeoutError:
                continue
            word = d.decode(errors="replace").split()[0]
            seen[word] = seen.get(word, 0) + 1
            print(f"got {word}", flush=True)
        out(seen=seen)
    elif mode == "udp-send":
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", int(argv[5]) if len(argv) > 5 else 0))
        for i in range(int(argv[3])):
            s.sendto(f"{argv[4]} {i}".encode(), (argv[1], int(argv[2])))
            time.sleep(0.01)
        out(sent=int(argv[3]))
    elif mode == "udp-flood":
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        dst = (argv[1], int(argv[2]))
        end = time.monotonic() + float(argv[3])
        sent = 0
        while time.monotonic() < end:
            for _ in range(1000):
                try:
                    s.sendto(b"flood-flood-flood!", dst)
                    sent += 1
                except OSError:
                    pass
        out(sent=sent)
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main(sys.argv[1:])
