"""A packet capture of what the router sends (B6): ``passnat run --capture FILE.pcapng``.

Every packet the engine emits (translated, forwarded, ICMP errors, echo
replies) is written as raw IPv4 (LINKTYPE_RAW) on its egress interface, with
the wall-clock time and the outbound direction flag, one interface block per
configuration interface, so Wireshark and tshark show which interface each
packet left on.  pcapng writing is scapy's (``RawPcapNgWriter``); the only
extension is writing all interface blocks up front.  The replay command
(``passnat replay``) writes its output with the same writer.

The capture costs a Python call per packet and grows without bound: it is a
diagnostic to switch on, not something to leave running.
"""
from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from passnat.nat.actions import Output

LINKTYPE_RAW = 101
DIRECTION_OUTBOUND = 2


def pcapng_writer(path: str, interfaces: list[str]) -> Any:
    """A scapy pcapng writer with one raw-IPv4 interface block per name, in order."""
    from scapy.utils import RawPcapNgWriter

    class _Writer(RawPcapNgWriter):  # type: ignore[misc]
        """scapy's writer, with one interface block per configuration interface up front."""

        def _write_header(self, pkt: Any) -> None:
            if self.header_present:
                return
            self.header_present = True
            self._write_block_shb()
            self.interfaces2id = {}
            for i, name in enumerate(interfaces):
                self._write_block_idb(linktype=LINKTYPE_RAW, ifname=name.encode())
                self.interfaces2id[name.encode()] = i

    w = _Writer(path)
    w.linktype = LINKTYPE_RAW
    w.write_header(None)
    return w


def write_outputs(writer: Any, outs: Iterable[Output], ts: float) -> int:
    """Write engine outputs stamped ``ts`` (bytes straight to scapy's block writer); returns how many."""
    n = 0
    for o in outs:
        writer._write_packet(o.packet, LINKTYPE_RAW, sec=ts, ifname=o.interface.encode(),
                             direction=DIRECTION_OUTBOUND)
        n += 1
    return n


class Capture:
    """The daemon's capture file: ``write(outs)`` for everything it sends."""

    def __init__(self, path: str, interfaces: list[str]):
        self.path = path
        self.writer = pcapng_writer(path, interfaces)
        self.packets = 0
        self._dirty = False

    def write(self, outs: Iterable[Output]) -> None:
        self.packets += write_outputs(self.writer, outs, time.time())
        self._dirty = True

    def flush(self) -> None:
        """Called by the daemon when it has nothing else to do: the file stays readable (tshark -r)."""
        if self._dirty:
            self.writer.f.flush()
            self._dirty = False

    def close(self) -> None:
        self.writer.close()
