"""Fakes for the daemon's data path: a TPACKET_V2 ring in memory, send sockets on socketpairs.

``make_daemon`` gives a Daemon on two fake links (lan0 LAN, lan1 WAN) with a
settable clock; ``FakeRing.put`` fills ring blocks the way the kernel does,
``FakeTx`` receives what the daemon sends (the Python path with ``send``, the C
ring path on the file descriptor) and plays a NIC that finishes requested
checksums.
"""
from __future__ import annotations

import mmap
import os
import socket
import struct
from collections import deque
from pathlib import Path

from scapy.all import ICMP, IP, TCP, UDP, Ether, raw  # type: ignore[attr-defined]
from scapy.layers.l2 import ARP

from passnat.config import parse_config
from passnat.io.afpacket import TP_STATUS_COPY, RingGeometry
from passnat.io.daemon import Daemon, DaemonOptions
from passnat.io.ether import mac_bytes
from passnat.io.hostsetup import Attachment
from passnat.io.neighbours import ArpTimers, NeighbourTable
from passnat.io.offload import VNET_F_NEEDS_CSUM, VNET_NONE, complete_partial, parse_vnet
from passnat.packet.checksum import pseudo_sum

CONFIG = """\
interface lan0 add 192.168.0.1/24
interface lan1 add 203.0.113.1/24
nat napt add private 192.168.0.0-192.168.0.255 interface lan1
"""
MACS = {"lan0": "02:00:00:00:00:01", "lan1": "02:00:00:00:01:01"}
PC_MAC, SRV_MAC = "02:00:00:00:00:0b", "02:00:00:00:01:0a"
FRAME = 2048  # slot size (afpacket.RingGeometry at MTU 1500)
NFRAMES = 64
MAC_OFF, NET_OFF = 76, 90  # where the kernel puts the Ethernet and IPv4 headers in a V2 slot (vnet header on)
#: tpacket2_hdr fields FakeRing.put can corrupt: offset, struct format
_FRAME_FIELDS = {"status": (0, "=I"), "len": (4, "=I"), "snap": (8, "=I"), "mac": (12, "=H"), "net": (14, "=H")}


class FakeRing:
    """A TPACKET_V2 ring in anonymous memory: ``put`` fills slots the way the kernel does
    (and drops, counted, when the slot at its head is still the reader's)."""

    def __init__(self, frames: int = NFRAMES) -> None:
        self.frame_size = FRAME
        self.frame_nr = frames
        self.mm = mmap.mmap(-1, FRAME * frames)
        self.head = 0  # the reader's (Daemon._drain)
        self.fill = 0  # the kernel's
        self.copies: deque[bytes] = deque()
        self.drops = 0
        self.stamp = 0

    def put(self, frames: list[tuple[bytes, int, bytes, int | None]],
            corrupt: dict[int, dict[str, int]] | None = None) -> list[int]:
        """Frames as (frame, status, vnet header, wire length or None) into the next slots; the
        slots' offsets.  ``corrupt``: frame index -> tpacket2_hdr fields to overwrite (status,
        len, snap, mac, net; a status keeps TP_STATUS_USER).  A frame larger than a slot is
        truncated there and marked TP_STATUS_COPY, and queued whole for ``recv_copy``."""
        offs = []
        for i, (frame, status, vnet, wirelen) in enumerate(frames):
            off = self.fill * FRAME
            if self.mm[off] & 1:
                self.drops += 1  # the ring is full
                continue
            snap = min(len(frame), FRAME - MAC_OFF)
            if snap < len(frame):
                status |= TP_STATUS_COPY
                self.copies.append((vnet or bytes(10)) + frame)
            self.stamp += 1
            struct.pack_into("=IIIHHII", self.mm, off, status & ~1, wirelen or len(frame), snap, MAC_OFF, NET_OFF,
                             self.stamp // 1000, self.stamp % 1000)
            self.mm[off + MAC_OFF - 10:off + MAC_OFF] = vnet or bytes(10)
            self.mm[off + MAC_OFF:off + MAC_OFF + snap] = frame[:snap]
            for name, value in (corrupt or {}).get(i, {}).items():
                at, fmt = _FRAME_FIELDS[name]
                struct.pack_into(fmt, self.mm, off + at, value | (1 if name == "status" else 0))
            self.mm[off] |= 1  # TP_STATUS_USER: handed over
            offs.append(off)
            self.fill = (self.fill + 1) % self.frame_nr
        return offs

    def recv_copy(self) -> bytes | None:
        return self.copies.popleft() if self.copies else None

    def fileno(self) -> int:
        return -1

    def ring_stats(self) -> tuple[int, int, int]:
        return (0, self.drops, 0)

class FakeTx:
    """A send socket with PACKET_VNET_HDR and a NIC that computes requested checksums.

    Frames go through a datagram socketpair, so the C ring path (which sends on
    ``fileno()``) and the Python path (``send``) land in the same place; ``frames``
    reads what arrived.  ``fail = True`` puts an unconnected socket on the same
    descriptor: every send then fails, in both paths, until ``fail = False``."""

    opened: list[FakeTx] = []

    def __init__(self) -> None:
        self.sock, self._peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        for s in (self.sock, self._peer):
            s.setblocking(False)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self._saved = os.dup(self.sock.fileno())
        self._fail = False
        self.send = self.sock.send
        self._frames: list[bytes] = []
        self.wire: list[bytes] = []  # every frame as sent, virtio_net_hdr included
        self.partial = 0
        FakeTx.opened.append(self)

    def fileno(self) -> int:
        return self.sock.fileno()

    @property
    def fail(self) -> bool:
        return self._fail

    @fail.setter
    def fail(self, value: bool) -> None:
        if value:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as unconnected:
                os.dup2(unconnected.fileno(), self.sock.fileno())
        else:
            os.dup2(self._saved, self.sock.fileno())
        self._fail = value

    @property
    def frames(self) -> list[bytes]:
        while True:
            try:
                frame = self._peer.recv(1 << 17)
            except BlockingIOError:
                return self._frames
            self.wire.append(frame)
            vnet, frame = parse_vnet(frame, 0), frame[10:]
            assert vnet.gso_type == 0
            if vnet.flags & VNET_F_NEEDS_CSUM:
                self.partial += 1
                frame = complete_partial(frame, vnet.csum_start, vnet.csum_offset)
            self._frames.append(frame)

    def close(self) -> None:
        self.sock.close()
        self._peer.close()
        os.close(self._saved)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make_daemon(tmp_path: Path, budget: int = 2048, config: str = CONFIG) -> tuple[Daemon, dict[str, FakeRing],
                                                                                dict[str, FakeTx], Clock]:
    conf = tmp_path / "r.conf"
    conf.write_text(config)
    opts = DaemonOptions(config_path=str(conf), attachments=[Attachment("lan0", "eth0", 1500),
                                                             Attachment("lan1", "eth1", 1500)],
                         control_path=str(tmp_path / "c.sock"), geometry=RingGeometry(),
                         arp_timers=ArpTimers(interval=1.0, retries=2), budget=budget)
    d = Daemon(parse_config(config, str(conf)), opts)
    clock = Clock()
    d.clock = clock
    rings, txs = {}, {}
    for name, link in d.links.items():
        rings[name], txs[name] = FakeRing(), FakeTx()
        link.ring = rings[name]  # type: ignore[assignment]
        link.tx = txs[name]  # type: ignore[assignment]
        link.neigh = NeighbourTable(name, mac_bytes(MACS[name]), opts.arp_timers, prefix=VNET_NONE)
        link.mtu = 1500
        d.bind_output(link)
    d._update_addresses()
    return d, rings, txs, clock


def eth(pkt: bytes, src: str = PC_MAC, dst: str = MACS["lan0"]) -> bytes:
    return raw(Ether(src=src, dst=dst) / IP(pkt))


def arp_frame(op: int, hwsrc: str, psrc: str, pdst: str, dst: str = "ff:ff:ff:ff:ff:ff") -> bytes:
    return raw(Ether(src=hwsrc, dst=dst) / ARP(op=op, hwsrc=hwsrc, psrc=psrc, pdst=pdst,
                                              hwdst="00:00:00:00:00:00" if op == 1 else MACS["lan1"]))


def partial(pkt: bytes) -> tuple[bytes, bytes]:
    """``pkt`` with a CHECKSUM_PARTIAL L4 field, and the vnet header describing it."""
    ihl = (pkt[0] & 15) * 4
    co = 16 if pkt[9] == 6 else 6
    src, dst = struct.unpack_from("!II", pkt, 12)
    field = struct.pack("!H", pseudo_sum(src, dst, pkt[9], len(pkt) - ihl))
    vnet = struct.pack("<BBHHHH", VNET_F_NEEDS_CSUM, 0, 0, 0, 14 + ihl, co)
    return pkt[:ihl + co] + field + pkt[ihl + co + 2:], vnet


def checks_ok(frame: bytes) -> IP:
    ip = Ether(frame)[IP]
    fresh = IP(raw(ip))
    del fresh.chksum
    for layer in (TCP, UDP, ICMP):
        if fresh.haslayer(layer):
            del fresh[layer].chksum
            break
    rebuilt = IP(raw(fresh))
    assert rebuilt.chksum == ip.chksum
    for layer in (TCP, UDP, ICMP):
        if ip.haslayer(layer):
            assert rebuilt[layer].chksum == ip[layer].chksum, f"{layer.__name__} checksum wrong"
            break
    return ip


def learn(d: Daemon, rings: dict[str, FakeRing]) -> None:
    """The PC and the server ARP for the router: both get learned."""
    rings["lan0"].put([(arp_frame(1, PC_MAC, "192.168.0.11", "192.168.0.1"), 0, b"", None)])
    rings["lan1"].put([(arp_frame(1, SRV_MAC, "203.0.113.10", "203.0.113.1"), 0, b"", None)])
    for link in d.links.values():
        d._drain(link)
