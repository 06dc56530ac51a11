"""PPTP peers: pptpd (with the pppd stand-in) on a server host, pptp-linux clients.

Role: render pptpd's files into the run directory, start pptpd in a host,
start pptp clients (``peers.ppp_standin client``) and collect both sides'
LCP echo counts.

Invariants:
  * pptpd runs in the foreground (``-f``) with its pid file in the run dir;
    the ``pptpctrl`` children it forks per call live in the same namespace
    and end with their TCP connection (``Lab.down`` kills stragglers by pid);
  * the server stand-ins' results are files ``ppp-server-<pid>.json`` in a
    directory per pptpd instance, so two servers' results never mix.
"""
from __future__ import annotations

import json
import shutil
import sys
from typing import Any

from passnat.lab.lab import Lab
from passnat.lab.proc import LabError, Proc
from passnat.lab.topology import HOSTS

PPTPD_CONF = """\
# pptpd for the passnat lab ({host}); "ppp" is the pppd stand-in (no kernel PPP)
ppp {ppp}
option {options}
localip 10.99.0.1
remoteip 10.99.0.100-199
listen {listen}
"""


def require_tools() -> None:
    missing = [t for t in ("pptpd", "pptp", "unshare") if shutil.which(t) is None]
    if missing:
        raise LabError(f"missing {', '.join(missing)}: run `make deps` (scripts/install-deps.sh)")


class PptpServer:
    def __init__(self, lab: Lab, host: str):
        require_tools()
        self.lab = lab
        self.host = host
        self.dir = lab.run_dir / f"pptpd-{host}"
        if self.dir.exists():
            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True)
        ppp = self.dir / "ppp-standin"
        ppp.write_text(f"#!{sys.executable}\n"
                       "import sys\n"
                       "from passnat.lab.peers.ppp_standin import server_main\n"
                       f"sys.exit(server_main({str(self.dir)!r}))\n")
        ppp.chmod(0o755)
        options = self.dir / "pptpd-options"
        options.write_text("# pppd options: ignored by the stand-in\n")
        self.conf = self.dir / "pptpd.conf"
        self.conf.write_text(PPTPD_CONF.format(host=host, ppp=ppp, options=options,
                                               listen=HOSTS[host].addr))
        self.proc: Proc | None = None

    def start(self) -> None:
        self.proc = self.lab.spawn(f"pptpd-{self.host}", self.host,
                                   ["pptpd", "-f", "-c", str(self.conf), "-p", str(self.dir / "pptpd.pid")])

    def wait_listening(self, timeout: float = 5.0) -> None:
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = self.lab.run_in(self.host, ["ss", "-Htln", "sport = :1723"], check=False).stdout
            if out.strip():
                return
            if self.proc is not None and not self.proc.alive():
                break
            time.sleep(0.1)
        raise LabError(f"pptpd on {self.host} is not listening on TCP 1723")

    def stop(self) -> None:
        if self.proc is not None:
            self.lab.forget(self.proc)
            self.proc = None

    def results(self) -> list[dict[str, Any]]:
        out = []
        for f in sorted(self.dir.glob("ppp-server-*.json")):
            try:
                out.append(json.loads(f.read_text()))
            except ValueError:
                continue
        return out


def start_client(lab: Lab, host: str, server_addr: str, *, duration: float, callid: int | None = None,
                 localbind: str | None = None, interval: float = 1.0) -> Proc:
    args = ["client", "--server", server_addr, "--tag", host, "--duration", str(duration),
            "--run-dir", str(lab.run_dir), "--barrier", "--interval", str(interval)]
    if callid is not None:
        args += ["--callid", str(callid)]
    if localbind:
        args += ["--localbind", localbind]
    return lab.spawn(f"pptp-{host}", host, lab.peer_argv("ppp_standin", *args), pipe=True)
