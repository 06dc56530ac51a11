"""A pppd stand-in for PPTP: real PPP LCP echoes in enhanced GRE, no kernel PPP needed.

pptp-linux (client) and pptpd's pptpctrl (server) both hand the PPP side to
a pppd over a byte stream with async-HDLC framing (RFC 1662: 0x7e flags,
0x7d escapes, FCS-16).  This program is that pppd, reduced to LCP:
every ``interval`` seconds it sends an LCP Echo-Request whose data is its own
tag, and it answers every Echo-Request with an Echo-Reply carrying the
request's data (never echoing replies, so there is no ping-pong storm).

    client: python -m passnat.lab.peers.ppp_standin client --server ADDR --tag pc1
                [--callid N] [--duration S] [--localbind ADDR] [--barrier]
        runs ``pptp ADDR --nolaunchpppd`` with its stdin on one end of a
        socketpair (pptp reads *and* writes fd 0), in a private mount
        namespace whose /run is an empty tmpfs (pptp's call-manager socket
        /run/pptp/<localbind>:<server> then never clashes between hosts or
        labs) and, with --callid, with a 2-byte file bound over /dev/random
        (pptp-linux draws its PNS Call ID from it).  Prints the JSON summary.
    server: ``ppp`` program of pptpd.conf (a generated wrapper calls
        ``server_main(log_dir)``): fd 0 is the pty, put in raw mode; it
        rewrites ``<log_dir>/ppp-server-<pid>.json`` with its counts every
        second and at the end.

A reply whose data is not our own tag was meant for another call: it is
counted as ``foreign``, so a NAT that crosses two calls is caught.
"""
from __future__ import annotations

import argparse
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import termios
import time
import tty
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from passnat.lab.peers.common import StopFlag, barrier, result

FLAG, ESC = 0x7E, 0x7D
LCP = b"\xff\x03\xc0\x21"
ECHO_REQ, ECHO_REP = 9, 10


def _fcstab() -> list[int]:
    tab = []
    for b in range(256):
        v = b
        for _ in range(8):
            v = (v >> 1) ^ 0x8408 if v & 1 else v >> 1
        tab.append(v & 0xFFFF)
    return tab


FCSTAB = _fcstab()


def fcs16(data: bytes, fcs: int = 0xFFFF) -> int:
    for b in data:
        fcs = (fcs >> 8) ^ FCSTAB[(fcs ^ b) & 0xFF]
    return fcs


def hdlc_encode(frame: bytes) -> bytes:
    raw = frame + struct.pack("<H", fcs16(frame) ^ 0xFFFF)
    out = bytearray([FLAG])
    for b in raw:
        if b < 0x20 or b in (FLAG, ESC):
            out += bytes([ESC, b ^ 0x20])
        else:
            out.append(b)
    out.append(FLAG)
    return bytes(out)


class HdlcDecoder:
    def __init__(self) -> None:
        self.buf = bytearray()
        self.esc = False
        self.bad = 0

    def feed(self, data: bytes) -> list[bytes]:
        frames = []
        for b in data:
            if b == FLAG:
                if len(self.buf) >= 4:
                    if fcs16(bytes(self.buf)) == 0xF0B8:
                        frames.append(bytes(self.buf[:-2]))
                    else:
                        self.bad += 1
                self.buf = bytearray()
                self.esc = False
            elif b == ESC:
                self.esc = True
            else:
                self.buf.append(b ^ 0x20 if self.esc else b)
                self.esc = False
        return frames


def lcp(code: int, ident: int, magic: int, data: bytes) -> bytes:
    return LCP + struct.pack("!BBHI", code, ident, 8 + len(data), magic) + data


class Echoer:
    """The LCP echo loop over one HDLC byte stream, with its counters."""

    def __init__(self, tag: str, interval: float):
        self.tag = tag
        self.interval = interval
        self.magic = int.from_bytes(os.urandom(4), "big")
        self.dec = HdlcDecoder()
        self.sent_req = self.got_req = self.got_rep = 0
        self.foreign = 0
        self.peer_tags: Counter[str] = Counter()
        self.t0 = time.monotonic()
        self.first_rep: float | None = None
        self.last_rep: float | None = None
        self.max_gap = 0.0
        self.end = "duration"

    def summary(self) -> dict[str, Any]:
        span = (self.last_rep - self.first_rep) if self.first_rep is not None and self.last_rep is not None else 0.0
        return {"tag": self.tag, "sent_req": self.sent_req, "got_rep": self.got_rep, "got_req": self.got_req,
                "foreign_rep": self.foreign, "peer_tags": dict(self.peer_tags), "badfcs": self.dec.bad,
                "reply_span_s": round(span, 2), "max_gap_s": round(self.max_gap, 2), "end": self.end,
                "elapsed_s": round(time.monotonic() - self.t0, 2)}

    def run(self, fd_in: int, fd_out: int, duration: float, stop: StopFlag,
            tick: Callable[[], None] | None = None) -> None:
        t_end = self.t0 + duration if duration else None
        nxt = self.t0
        ident = 0
        while not stop:
            now = time.monotonic()
            if t_end is not None and now >= t_end:
                break
            if now >= nxt:
                ident = (ident + 1) & 0xFF
                os.write(fd_out, hdlc_encode(lcp(ECHO_REQ, ident, self.magic, self.tag.encode())))
                self.sent_req += 1
                nxt = now + self.interval
                if tick is not None:
                    tick()
            try:
                r, _, _ = select.select([fd_in], [], [], max(0.0, min(nxt - time.monotonic(), 0.5)))
            except InterruptedError:
                continue
            if not r:
                continue
            try:
                data = os.read(fd_in, 65536)
            except OSError:
                self.end = "read error"
                break
            if not data:
                self.end = "EOF"
                break
            for fr in self.dec.feed(data):
                if len(fr) < 12 or fr[:4] != LCP:
                    continue
                code, rid, body = fr[4], fr[5], fr[12:]
                if code == ECHO_REQ:
                    self.got_req += 1
                    self.peer_tags[body.decode(errors="replace")] += 1
                    os.write(fd_out, hdlc_encode(lcp(ECHO_REP, rid, self.magic, body)))
                elif code == ECHO_REP:
                    if body != self.tag.encode():
                        self.foreign += 1
                        continue
                    self.got_rep += 1
                    t = time.monotonic() - self.t0
                    self.first_rep = t if self.first_rep is None else self.first_rep
                    if self.last_rep is not None:
                        self.max_gap = max(self.max_gap, t - self.last_rep)
                    self.last_rep = t


def client(a: argparse.Namespace) -> int:
    x, y = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    mounts = ['mount -t tmpfs -o size=1m,mode=0755 passnat-lab /run']
    args = []
    if a.callid is not None:
        fn = Path(a.run_dir) / f"callid-{a.tag}.bin"
        fn.write_bytes(struct.pack("=H", a.callid))
        mounts.append('mount --bind "$1" /dev/random')
        args.append(str(fn))
    else:
        args.append("-")
    pptp = ["pptp", a.server, "--nolaunchpppd"] + (["--localbind", a.localbind] if a.localbind else [])
    cmd = ["unshare", "-m", "--propagation", "private", "sh", "-c",
           " && ".join(mounts) + ' && shift && exec "$@"', "sh", *args, *pptp]
    stop = StopFlag()
    barrier(a.barrier)
    p = subprocess.Popen(cmd, stdin=y.fileno(), stdout=subprocess.DEVNULL, close_fds=True)
    y.close()
    e = Echoer(a.tag, a.interval)
    try:
        e.run(x.fileno(), x.fileno(), a.duration, stop)
    finally:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    out = e.summary()
    out["pptp_exit"] = p.returncode
    result(out)
    return 0


def server_main(log_dir: str, interval: float = 1.0) -> int:
    """Entry point when pptpctrl runs us in place of pppd (all pppd options ignored)."""
    args = sys.argv[1:]
    ipparam = next((args[i + 1] for i, x in enumerate(args[:-1]) if x == "ipparam"), "?")
    if os.isatty(0):
        tty.setraw(0, termios.TCSANOW)
    e = Echoer(f"srv-{os.getpid()}", interval)
    path = Path(log_dir) / f"ppp-server-{os.getpid()}.json"

    def dump() -> None:
        d = e.summary()
        d["ipparam"] = ipparam
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(d))
        tmp.replace(path)

    try:
        e.run(0, 1, 0, StopFlag(), tick=dump)
    finally:
        dump()
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="ppp_standin")
    ap.add_argument("mode", choices=["client"])
    ap.add_argument("--server", required=True)
    ap.add_argument("--tag", required=True)
    ap.add_argument("--callid", type=lambda s: int(s, 0))
    ap.add_argument("--duration", type=float, default=12.0)
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--localbind")
    ap.add_argument("--run-dir", default="/tmp")
    ap.add_argument("--barrier", action="store_true")
    return client(ap.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
