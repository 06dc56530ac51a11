"""TCP SYNs from many inside addresses, paced (issue 13 namespace tests).  Standalone, run in a
test namespace; only ever sends to the destination given (a test host).

  synflood.py SRC_BASE HOSTS FIRST_PORT PORTS DST DPORT RATE [REPEAT]

Sends, for each source port FIRST_PORT .. FIRST_PORT+PORTS-1, one SYN from each of HOSTS
addresses counting up from SRC_BASE (inside hosts with identical sequential ports), at RATE
packets/s (0: as fast as the socket takes them), REPEAT times.  Prints {"sent": n, "seconds": t}.
"""
from __future__ import annotations

import errno
import json
import socket
import struct
import sys
import time


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def syn(src: int, dst: int, sport: int, dport: int) -> bytes:
    tcp = bytearray(struct.pack("!HHIIBBHHH", sport, dport, sport * 7919, 0, 0x50, 0x02, 64240, 0, 0))
    struct.pack_into("!H", tcp, 16, checksum(struct.pack("!IIBBH", src, dst, 0, 6, len(tcp)) + tcp))
    ip = bytearray(struct.pack("!BBHHHBBHII", 0x45, 0, 20 + len(tcp), 0, 0, 64, 6, 0, src, dst))
    struct.pack_into("!H", ip, 10, checksum(ip))
    return bytes(ip + tcp)


def main(argv: list[str]) -> None:
    src_base = int.from_bytes(socket.inet_aton(argv[0]), "big")
    hosts, first, ports = int(argv[1]), int(argv[2]), int(argv[3])
    dst_text, dport, rate = argv[4], int(argv[5]), float(argv[6])
    repeat = int(argv[7]) if len(argv) > 7 else 1
    dst = int.from_bytes(socket.inet_aton(dst_text), "big")
    frames = [syn(src_base + h, dst, first + i, dport) for i in range(ports) for h in range(hosts)]
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 22)
    sent = 0
    t0 = time.monotonic()
    for _ in range(repeat):
        for f in frames:
            while True:
                try:
                    s.sendto(f, (dst_text, 0))
                    break
                except OSError as e:  # a full queue: wait; anything else is a real error
                    if e.errno not in (errno.ENOBUFS, errno.EAGAIN):
                        raise
                    time.sleep(0.001)
            sent += 1
            if rate > 0 and sent % 50 == 0:
                ahead = t0 + sent / rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
    print(json.dumps({"sent": sent, "seconds": round(time.monotonic() - t0, 3)}), flush=True)

if __name__ == "__main__":
    main(sys.argv[1:])
