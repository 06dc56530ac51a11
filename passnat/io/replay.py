"""``passnat replay``: a pcapng capture through the engine, what it sends to a pcapng (R3).

For reproducing a user's problem from their capture.  Each packet enters the
engine on the interface its pcapng interface block names (``if_name`` =
``lan0``, ``lan1``, ...), with its recorded timestamp as the clock; before each
packet the engine's timers that came due are run (``on_timer`` at each
deadline), so expiry and held packets behave as they did in real time.
Outputs are written as raw IPv4 (LINKTYPE_RAW) on the egress interface,
stamped with the time they were produced and marked outbound, one interface
block per configuration interface in configuration order, so Wireshark and
tshark show which interface each packet left on.

Input link types: Ethernet (with one 802.1Q tag at most), raw IPv4 (101,
228), Linux cooked v1/v2 (113, 276).  Skipped and counted: packets with the
outbound direction flag (the router's own transmissions in a capture taken on
the router), interfaces the configuration does not name, non-IPv4 frames.

pcapng reading and writing is scapy's (RawPcapNgReader/RawPcapNgWriter); the
writer is shared with ``passnat run --capture`` (passnat/io/capture.py).
"""
from __future__ import annotations

import logging
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from passnat.config.model import Config
from passnat.io.capture import DIRECTION_OUTBOUND, pcapng_writer, write_outputs
from passnat.nat.actions import Output
from passnat.nat.router import Router

log = logging.getLogger("passnat.replay")

LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_IPV4 = 228
LINKTYPE_LINUX_SLL = 113
LINKTYPE_LINUX_SLL2 = 276


class ReplayError(Exception):
    pass


def ipv4_of(linktype: int, data: bytes) -> bytes | None:
    """The IPv4 packet in one captured frame, or None."""
    if linktype == LINKTYPE_ETHERNET:
        if len(data) < 14:
            return None
        etype, off = int.from_bytes(data[12:14], "big"), 14
        if etype in (0x8100, 0x88A8) and len(data) >= 18:
            etype, off = int.from_bytes(data[16:18], "big"), 18
        pkt = data[off:] if etype == 0x0800 else None
    elif linktype in (LINKTYPE_RAW, LINKTYPE_IPV4):
        pkt = data
    elif linktype == LINKTYPE_LINUX_SLL:
        pkt = data[16:] if len(data) >= 16 and data[14:16] == b"\x08\x00" else None
    elif linktype == LINKTYPE_LINUX_SLL2:
        pkt = data[20:] if len(data) >= 20 and data[0:2] == b"\x08\x00" else None
    else:
        return None
    if not pkt or pkt[0] >> 4 != 4:
        return None
    return pkt


@dataclass
class ReplayResult:
    read: int = 0
    fed: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    written: Counter[str] = field(default_factory=Counter)
    drops: dict[str, int] = field(default_factory=dict)

    def summary(self, out_path: str) -> str:
        def kv(c: Counter[str] | dict[str, int]) -> str:
            return ", ".join(f"{k}: {v}" for k, v in sorted(c.items())) or "none"

        return (f"replay: {self.read} packet(s) read; fed to the engine: {kv(self.fed)}; skipped: "
                f"{kv(self.skipped)}\n"
                f"replay: {sum(self.written.values())} packet(s) written to {out_path} ({kv(self.written)})\n"
                f"replay: engine counters: {kv(self.drops)}\n")


def replay(config: Config, capture: str, output: str, *, router: Router | None = None) -> ReplayResult:
    """Feed ``capture`` through a router for ``config``; write its outputs to ``output``."""
    from scapy.error import Scapy_Exception
    from scapy.utils import RawPcapNgReader, RawPcapReader

    names = [i.name for i in config.interfaces]
    known = set(names)
    router = router if router is not None else Router(config)
    res = ReplayResult()
    try:
        reader = RawPcapReader(capture)
    except (OSError, Scapy_Exception) as e:
        raise ReplayError(f"cannot read {capture}: {e}") from None
    if not isinstance(reader, RawPcapNgReader):
        reader.close()
        raise ReplayError(f"{capture} is a classic pcap file: it names no interfaces; use pcapng "
                          "(tshark/dumpcap write it by default) with if_name lan0, lan1, ...")
    try:
        writer = pcapng_writer(output, names)
    except OSError as e:
        reader.close()
        raise ReplayError(f"cannot write {output}: {e.strerror or e}") from None

    def write(outs: list[Output], ts: float) -> None:
        write_outputs(writer, outs, ts)
        for o in outs:
            res.written[o.interface] += 1

    last_timer = float("-inf")
    try:
        for data, meta_ in reader:
            meta: Any = meta_  # scapy's PacketMetadataNg (a namedtuple made at run time)
            res.read += 1
            ts = ((meta.tshigh << 32) | meta.tslow) / meta.tsresol
            if meta.direction == DIRECTION_OUTBOUND:
                res.skipped["outbound direction"] += 1
                continue
            iface = meta.ifname.decode("utf-8", "replace") if meta.ifname else None
            if iface not in known:
                res.skipped[f"interface {iface or '(unnamed)'} not in the configuration"] += 1
                continue
            pkt = ipv4_of(meta.linktype, data)
            if pkt is None:
                res.skipped["not IPv4"] += 1
                continue
            while True:  # timers that came due before this packet, each at its own time
                due = router.next_deadline()
                if due is None or due > ts or due <= last_timer:
                    break
                last_timer = due
                write(router.on_timer(due), due)
            res.fed[iface] += 1
            write(router.handle(iface, pkt, ts), ts)
    finally:
        reader.close()
        writer.close()
    res.drops = {k: v for k, v in router.counters().items() if v and k not in ("sessions", "sessions_created")}
    return res


def main(config_path: str, capture: str, output: str, log_level: str = "warning") -> int:
    from passnat.io.startup import load_config, setup_logging

    setup_logging(log_level)
    config, problems = load_config(config_path)
    if config is None:
        for line in problems:
            print(line if line.startswith(config_path) else f"passnat: {line}", file=sys.stderr)
        return 1
    try:
        res = replay(config, capture, output)
    except ReplayError as e:
        print(f"passnat: {e}", file=sys.stderr)
        return 1
    sys.stdout.write(res.summary(output))
    return 0
