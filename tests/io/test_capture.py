"""--capture: the pcapng writer for what the router sends (tshark reads it)."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from scapy.utils import RawPcapNgReader

from passnat.io.capture import Capture
from passnat.nat.actions import Output
from tests.nat.helpers import make_router, ping


def test_capture_writes_every_output_on_its_interface(tmp_path: Path) -> None:
    r = make_router()
    path = str(tmp_path / "sent.pcapng")
    cap = Capture(path, ["lan0", "lan1"])
    cap.write(r.handle("lan0", ping("192.168.0.11", "198.51.100.7", 3), 0.0))
    cap.write(r.handle("lan1", ping("198.51.100.7", "203.0.113.1", 3, reply=True), 0.1))
    cap.write([Output("lan0", "192.168.0.11", b"\x45" + b"\0" * 19)])
    cap.flush()
    got = [(meta.ifname, meta.direction, data[:1]) for data, meta in RawPcapNgReader(path)]
    assert [g[0] for g in got] == [b"lan1", b"lan0", b"lan0"] and all(g[1] == 2 for g in got)
    cap.close()
    assert cap.packets == 3
    tshark = shutil.which("tshark")
    assert tshark is not None, "tshark is installed by scripts/install-deps.sh"
    out = subprocess.run([tshark, "-r", path, "-T", "fields", "-e", "frame.interface_name", "-e", "icmp.type"],
                         capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[:2] == ["lan1\t8", "lan0\t0"]
