"""Load shedding before the kernel's receive work: a small XDP program per interface.

Under an overload, AF_PACKET alone cannot protect the router: the kernel does
its whole receive work (an skb, receive packet steering to the router's CPU,
the copy into the ring) for every frame, also for the frames it then drops at
the full ring, and on the router's own CPU that work can take most of the time
passnat needs to forward (receive livelock; docs/daemon.md, docs/performance.md).
XDP runs first, in the driver (veth included), before any of that: this
program drops a fraction of the IPv4 frames there -- ARP and everything else
pass -- and passnat sets the fraction from how full its receive ring stays
(``Shedder.adjust``): 0 while it keeps up, more while the ring fills, so
passnat forwards at its peak instead of a fraction of it.

The program (hand-assembled eBPF, 36 instructions, no compiler needed) reads
one array map that passnat maps into its memory:

  level   u32   frames dropped per 1024 IPv4 frames (0..1024)
  stamp   u32   passnat's clock when it last set the level (ms, CLOCK_MONOTONIC & 0xFFFFFFFF)
  shed    u64   frames the program dropped (``rx_shed``)

A level older than 200 ms is ignored: if passnat stops or dies, nothing is
shed any more, whatever the level was.

The program is on the interface only while an overload lasts (``Link.shed_turn``):
put on when passnat's receive ring has stayed three quarters full for 50 ms,
taken off after 0.25 s without shedding, or after 1 s on to see whether passnat
keeps up without it.  An XDP program costs something even when it passes
everything (on veth it moves the device's receive onto a NAPI path of its own
and stops the peer's super-frames: a third of the forwarding rate and ~0.05 ms
per ping round trip in ``make bench-lab``), so a router that keeps up runs
without it.  It is loaded at start and tried on the interface once, in the driver's
mode only (``XDP_FLAGS_DRV_MODE``; multi-buffer frames allowed, so super-frames
from peers with TSO still pass); where that is refused (an old kernel, a
driver without XDP) passnat runs without it and says so once.  ``passnat run
--no-shed`` turns it off.  Taken off at stop; a program left by a killed
passnat is replaced by the next start (and ignored meanwhile, by its stale
stamp).
"""
from __future__ import annotations

import ctypes
import errno
import logging
import mmap
import os
import struct
import time
from typing import Any

log = logging.getLogger("passnat.io.shed")

SYS_BPF = 321 if os.uname().machine == "x86_64" else 280  # x86_64; aarch64 (asm-generic)
BPF_MAP_CREATE, BPF_PROG_LOAD = 0, 5
BPF_MAP_TYPE_ARRAY = 2
BPF_PROG_TYPE_XDP = 6
BPF_F_MMAPABLE = 1 << 10
BPF_F_XDP_HAS_FRAGS = 1 << 5
XDP_FLAGS_DRV_MODE = 1 << 2
STALE_MS = 200

_VALUE = struct.Struct("<IIQ")  # level, stamp, shed


def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


def _program(map_fd: int) -> tuple[bytes, int]:
    """The shedding program for ``map_fd``: (instructions, count)."""
    ldx_w, ldx_h, mov_r, mov_k, add_k, and_k, sub_r = 0x61, 0x69, 0xBF, 0xB7, 0x07, 0x57, 0x1F
    jgt_r, jne_k, jeq_k, jge_r, jgt_k = 0x2D, 0x55, 0x15, 0x3D, 0x25
    stx_w, call, exit_, ld_dw, xadd_dw = 0x63, 0x85, 0x95, 0x18, 0xDB
    spec: list[Any] = [
        (mov_r, 6, 1, 0, 0),                   # r6 = ctx
        (ldx_w, 2, 6, 0, 0),                   # r2 = data
        (ldx_w, 3, 6, 4, 0),                   # r3 = data_end
        (mov_r, 4, 2, 0, 0),
        (add_k, 4, 0, 0, 14),
        (jgt_r, 4, 3, "pass", 0),              # no Ethernet header: pass
        (ldx_h, 5, 2, 12, 0),                  # the ethertype as loaded (little-endian)
        (jne_k, 5, 0, "pass", 0x0008),         # not IPv4: pass (ARP, ...)
        (mov_k, 7, 0, 0, 0),
        (stx_w, 10, 7, -4, 0),                 # key 0 on the stack
        (mov_r, 2, 10, 0, 0),
        (add_k, 2, 0, 0, -4),
        (ld_dw, 1, 1, 0, map_fd), (0, 0, 0, 0, 0),  # r1 = the map
        (call, 0, 0, 0, 1),                    # bpf_map_lookup_elem
        (jeq_k, 0, 0, "pass", 0),
        (mov_r, 8, 0, 0, 0),                   # r8 = the value
        (ldx_w, 7, 8, 0, 0),                   # r7 = level
        (jeq_k, 7, 0, "pass", 0),
        (call, 0, 0, 0, 5),                    # bpf_ktime_get_ns
        (mov_k, 1, 0, 0, 1000000),
        (0x3F, 0, 1, 0, 0),                    # r0 /= 1e6 (ms)
        (ldx_w, 1, 8, 4, 0),                   # r1 = stamp
        (sub_r, 0, 1, 0, 0),                   # r0 = now - stamp
        (0x67, 0, 0, 0, 32), (0x77, 0, 0, 0, 32),  # keep the low 32 bits (wraps like u32)
        (jgt_k, 0, 0, "pass", STALE_MS),       # a stale level: passnat is gone, pass
        (call, 0, 0, 0, 7),                    # bpf_get_prandom_u32
        (and_k, 0, 0, 0, 1023),
        (jge_r, 0, 7, "pass", 0),              # rand >= level: pass
        (mov_k, 1, 0, 0, 1),
        (xadd_dw, 8, 1, 8, 0),                 # shed += 1
        (mov_k, 0, 0, 0, 1),                   # XDP_DROP
        (exit_, 0, 0, 0, 0),
        "pass",
        (mov_k, 0, 0, 0, 2),                   # XDP_PASS
        (exit_, 0, 0, 0, 0),
    ]
    labels: dict[str, int] = {}
    n = 0
    for s in spec:
        if isinstance(s, str):
            labels[s] = n
        else:
            n += 1
    out = []
    n = 0
    for s in spec:
        if isinstance(s, str):
            continue
        code, dst, src, off, imm = s
        if isinstance(off, str):
            off = labels[off] - n - 1
        out.append(_insn(code, dst, src, off, imm))
        n += 1
    return b"".join(out), n


_libc: Any = None


def _bpf(cmd: int, attr: bytes) -> int:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    buf = ctypes.create_string_buffer(attr, 128)
    r = _libc.syscall(SYS_BPF, cmd, buf, 128)
    if r < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return int(r)


def _now_ms() -> int:
    return int(time.clock_gettime(time.CLOCK_MONOTONIC) * 1000) & 0xFFFFFFFF


def adjust(level: int, fill: float) -> int:
    """The next level (0..1024) from the current one and how full the ring stayed after a walk that
    used its whole budget: up fast while three quarters full, slowly while half full, down once it
    drains below a quarter.  The lower half of the ring stays a buffer for bursts and short stalls
    (4096 slots: 40 ms at 100,000 frames a second): only a sustained overload is shed."""
    if fill >= 0.75:
        return min(1024, level + 32 + level // 4)
    if fill >= 0.5:
        return min(1024, level + 8)
    if fill < 0.25:
        return max(0, level - 32 - level // 8)
    return level


class Shedder:
    """The shedding program for one interface, its level, and whether it is on the interface.

    The program is loaded once (``load``) but sits on the interface only while
    an overload lasts (``attach`` / ``detach``, by ``Link.shed_turn``): on veth,
    a native XDP program moves the device's receive onto its own NAPI path and
    stops its peer's super-frames, which costs a third of the forwarding rate
    and ~0.05 ms per round trip at any load (docs/daemon.md)."""

    def __init__(self, ifname: str):
        self.ifname = ifname
        self.map_fd = -1
        self.prog_fd = -1
        self.mm: mmap.mmap | None = None
        self.level = 0
        self.set_at = 0.0  # time.monotonic() of the last set_level
        self.ifindex = 0  # non-zero while the program is on the interface

    @property
    def attached(self) -> bool:
        return self.ifindex != 0

    def load(self) -> None:
        """Load the program and its map, and check that the driver takes it (put on and taken off at
        once); raises OSError when the kernel or the driver refuses."""
        try:
            self.map_fd = _bpf(BPF_MAP_CREATE, struct.pack("<IIIII", BPF_MAP_TYPE_ARRAY, 4, _VALUE.size, 1,
                                                           BPF_F_MMAPABLE))
            self.mm = mmap.mmap(self.map_fd, mmap.PAGESIZE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
            code, n = _program(self.map_fd)
            insns = ctypes.create_string_buffer(code)
            lic = ctypes.create_string_buffer(b"GPL")
            name = b"passnat_shed".ljust(16, b"\0")
            # bpf_attr for BPF_PROG_LOAD: type, insn_cnt, insns, license, log_level, log_size, log_buf,
            # kern_version, prog_flags, prog_name[16]
            attr = struct.pack("<IIQQIIQII16s", BPF_PROG_TYPE_XDP, n, ctypes.addressof(insns),
                               ctypes.addressof(lic), 0, 0, 0, 0, BPF_F_XDP_HAS_FRAGS, name)
            self.prog_fd = _bpf(BPF_PROG_LOAD, attr)
            self.attach()
            self.detach()
        except BaseException:
            self.close()
            raise

    def attach(self) -> None:
        """Put the program on the interface (raises OSError when refused or the interface is gone)."""
        from pyroute2 import IPRoute  # type: ignore[import-untyped]

        try:
            with IPRoute() as ipr:
                found = ipr.link_lookup(ifname=self.ifname)
                if not found:
                    raise OSError(errno.ENODEV, f"no interface {self.ifname}")
                ipr.link("set", index=found[0], xdp_fd=self.prog_fd, xdp_flags=XDP_FLAGS_DRV_MODE)
        except OSError:
            raise
        except Exception as e:  # noqa: BLE001 -- pyroute2's NetlinkError is not an OSError
            code = getattr(e, "code", 0)
            raise OSError(code if isinstance(code, int) and code > 0 else errno.EIO,
                          os.strerror(code) if isinstance(code, int) and code > 0 else str(e)) from e
        self.ifindex = found[0]

    def detach(self) -> None:
        """Take the program off the interface (quietly: the interface may be gone)."""
        if not self.ifindex:
            return
        try:
            from pyroute2 import IPRoute

            with IPRoute() as ipr:
                ipr.link("set", index=self.ifindex, xdp_fd=-1, xdp_flags=XDP_FLAGS_DRV_MODE)
        except Exception as e:  # noqa: BLE001 -- the interface may be gone; nothing else to do
            log.debug("%s: detaching the shedding program: %s", self.ifname, e)
        self.ifindex = 0
        self.level = 0

    def set_level(self, level: int) -> None:
        assert self.mm is not None
        self.level = level
        self.set_at = time.monotonic()
        struct.pack_into("<II", self.mm, 0, level, _now_ms())

    def keepalive(self) -> None:
        """Refresh the stamp (a level is honoured for 200 ms after it was set)."""
        if self.mm is not None and self.level:
            self.set_at = time.monotonic()
            struct.pack_into("<I", self.mm, 4, _now_ms())

    @property
    def shed(self) -> int:
        return _VALUE.unpack_from(self.mm, 0)[2] if self.mm is not None else 0

    def close(self) -> None:
        self.detach()
        if self.mm is not None:
            try:
                self.mm.close()
            except BufferError:
                pass
            self.mm = None
        for fd in (self.prog_fd, self.map_fd):
            if fd >= 0:
                os.close(fd)
        self.prog_fd = self.map_fd = -1
