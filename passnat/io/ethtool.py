"""GRO and LRO on an interface, through the ethtool ioctl (``SIOCETHTOOL``).

The router must see frames as they were on the wire: generic/large receive
offload merges consecutive TCP segments into one big frame before AF_PACKET
sees it.  ``disable_receive_offloads`` switches both off on an interface the
router owns and returns the previous state; ``restore`` puts it back at stop.

Invariant: only settings that were on and were switched off are restored;
an interface that does not support a setting (``EOPNOTSUPP``) is left alone.
"""
from __future__ import annotations

import array
import errno
import fcntl
import logging
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("passnat.io.ethtool")

SIOCETHTOOL = 0x8946
ETHTOOL_GFLAGS = 0x25
ETHTOOL_SFLAGS = 0x26
ETHTOOL_GGRO = 0x2B
ETHTOOL_SGRO = 0x2C
ETH_FLAG_LRO = 1 << 15


@dataclass(frozen=True, slots=True)
class OffloadState:
    """What ``disable_receive_offloads`` changed on one interface."""

    ifname: str
    gro_was_on: bool
    lro_was_on: bool


def _ethtool(ifname: str, cmd: int, data: int = 0) -> int:
    buf = array.array("I", [cmd, data])
    addr, _ = buf.buffer_info()
    ifr = struct.pack("16sP", ifname.encode(), addr)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        fcntl.ioctl(s, SIOCETHTOOL, ifr)
    return buf[1]


def _get(ifname: str, cmd: int) -> int | None:
    try:
        return _ethtool(ifname, cmd)
    except OSError as e:
        if e.errno in (errno.EOPNOTSUPP, errno.EINVAL):
            return None
        raise


def gro_enabled(ifname: str) -> bool | None:
    value = _get(ifname, ETHTOOL_GGRO)
    return None if value is None else bool(value)


def lro_enabled(ifname: str) -> bool | None:
    flags = _get(ifname, ETHTOOL_GFLAGS)
    return None if flags is None else bool(flags & ETH_FLAG_LRO)


def set_gro(ifname: str, on: bool) -> None:
    _ethtool(ifname, ETHTOOL_SGRO, int(on))


def set_lro(ifname: str, on: bool) -> None:
    flags = _ethtool(ifname, ETHTOOL_GFLAGS)
    _ethtool(ifname, ETHTOOL_SFLAGS, (flags | ETH_FLAG_LRO) if on else (flags & ~ETH_FLAG_LRO))


def disable_receive_offloads(ifname: str, record: Callable[[OffloadState], None] | None = None) -> OffloadState:
    """Switch GRO and LRO off on ``ifname`` (logged); the state to restore later.  ``record``
    is called with what will be switched off *before* anything is (the host journal, so a
    killed daemon's successor can restore it)."""
    gro = gro_enabled(ifname) is True
    lro = lro_enabled(ifname) is True
    if record is not None and (gro or lro):
        record(OffloadState(ifname, gro, lro))
    if gro:
        set_gro(ifname, False)
        log.info("%s: generic-receive-offload switched off (restored at stop)", ifname)
    if lro:
        try:
            set_lro(ifname, False)
            log.info("%s: large-receive-offload switched off (restored at stop)", ifname)
        except OSError as e:
            lro = False
            log.warning("%s: cannot switch large-receive-offload off (%s): merged frames are "
                        "segmented or dropped as super-frames", ifname, e.strerror)
    return OffloadState(ifname, gro, lro)


def restore(state: OffloadState) -> None:
    """Switch back on what ``disable_receive_offloads`` switched off."""
    try:
        if state.gro_was_on:
            set_gro(state.ifname, True)
            log.info("%s: generic-receive-offload restored", state.ifname)
        if state.lro_was_on:
            set_lro(state.ifname, True)
            log.info("%s: large-receive-offload restored", state.ifname)
    except OSError as e:
        log.warning("%s: cannot restore receive offloads: %s", state.ifname, e.strerror or e)
