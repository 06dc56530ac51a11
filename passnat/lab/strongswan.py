"""strongSwan IKEv2 peers: a responder on a server, road warriors on the PCs.

Role: write each node's ``strongswan.conf`` and ``swanctl.conf`` into
``<run dir>/ipsec/<node>/``, start charon in the node's namespace, load and
initiate connections with swanctl, stop charon by pid.

Facts this relies on (see docs/lab.md):
  * charon's pid file path (/var/run/charon.pid) is compiled in, so each
    charon runs in a private mount namespace whose /run is its node
    directory's ``run/``; its VICI socket is a filesystem path under the run
    dir (not under /run, which that bind mount would hide), so swanctl can
    reach it from anywhere;
  * ESP is userspace (``kernel-libipsec``, a TUN device ``ipsec0``): this
    kernel has no ESP, and libipsec always uses UDP 4500 (NAT-T);
  * the server's protected network is 10.10.0.1/32 on its loopback; clients
    get virtual IPs from 10.20.0.0/24.
"""
from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

from passnat.lab.lab import Lab
from passnat.lab.proc import LabError, Proc, run
from passnat.lab.topology import HOSTS

CHARON = Path("/usr/lib/ipsec/charon")
PSK = "passnat-lab-psk"
PROTECTED = "10.10.0.1"

STRONGSWAN_CONF = """\
# strongswan.conf for lab node {node}
charon {{
    load_modular = no
    load = random nonce openssl aes sha1 sha2 hmac gmp kdf pem pkcs1 x509 pubkey kernel-libipsec kernel-netlink socket-default vici updown
    install_routes = yes
    plugins {{
        vici {{
            socket = unix://{dir}/charon.vici
        }}
    }}
    filelog {{
        lab {{
            path = {dir}/charon.log
            time_format = %H:%M:%S
            default = 1
            ike = 2
            flush_line = yes
        }}
    }}
    syslog {{
        daemon {{
            default = -1
        }}
    }}
}}
swanctl {{
    load = pem pkcs1 x509 pubkey openssl random
}}
"""

RESPONDER = """\
connections {{
    rw {{
        version = 2
        local_addrs = {addr}
        pools = rwpool
        proposals = aes128-sha256-modp2048
        local {{
            auth = psk
            id = {node}.lab
        }}
        remote {{
            auth = psk
        }}
        children {{
            net {{
                local_ts = 10.10.0.0/24
                esp_proposals = aes128-sha256
            }}
        }}
    }}
}}
pools {{
    rwpool {{
        addrs = 10.20.0.0/24
    }}
}}
secrets {{
    ike-lab {{
        secret = "{psk}"
    }}
}}
"""

INITIATOR = """\
connections {{
    home {{
        version = 2
        remote_addrs = {server}
        vips = 0.0.0.0
        proposals = aes128-sha256-modp2048
        local {{
            auth = psk
            id = {node}.lab
        }}
        remote {{
            auth = psk
            id = {server_node}.lab
        }}
        children {{
            home {{
                remote_ts = 10.10.0.0/24
                esp_proposals = aes128-sha256
            }}
        }}
    }}
}}
secrets {{
    ike-lab {{
        secret = "{psk}"
    }}
}}
"""


def require_tools() -> None:
    if not CHARON.exists() or shutil.which("swanctl") is None:
        raise LabError("strongSwan (charon, swanctl) missing: run `make deps` (scripts/install-deps.sh)")


class Charon:
    """One charon in one lab host."""

    def __init__(self, lab: Lab, node: str, server: str | None = None):
        require_tools()
        self.lab = lab
        self.node = node
        self.dir = lab.run_dir / "ipsec" / node
        if self.dir.exists():
            shutil.rmtree(self.dir)
        (self.dir / "run").mkdir(parents=True)
        self.conf = self.dir / "strongswan.conf"
        self.conf.write_text(STRONGSWAN_CONF.format(node=node, dir=self.dir))
        self.swanctl_conf = self.dir / "swanctl.conf"
        if server is None:
            self.swanctl_conf.write_text(RESPONDER.format(addr=HOSTS[node].addr, node=node, psk=PSK))
        else:
            self.swanctl_conf.write_text(INITIATOR.format(server=HOSTS[server].addr, server_node=server,
                                                          node=node, psk=PSK))
        self.vici = self.dir / "charon.vici"
        self.proc: Proc | None = None

    def start(self) -> None:
        script = 'mount --bind "$0/run" /run && STRONGSWAN_CONF="$0/strongswan.conf" exec "$1"'
        self.proc = self.lab.spawn(f"charon-{self.node}", self.node,
                                   ["unshare", "-m", "--propagation", "private", "sh", "-c", script,
                                    str(self.dir), str(CHARON)], log=f"charon-{self.node}.out")

    def wait_ready(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.vici.is_socket():
                return
            if self.proc is not None and not self.proc.alive():
                break
            time.sleep(0.05)
        raise LabError(f"charon on {self.node} did not start (see {self.dir})")

    def swanctl(self, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        argv = ["env", f"STRONGSWAN_CONF={self.conf}", "swanctl", *args, "--uri", f"unix://{self.vici}"]
        return run(argv, check=False, timeout=timeout)

    def load(self) -> None:
        cp = self.swanctl("--load-all", "--noprompt", "--file", str(self.swanctl_conf))
        if cp.returncode != 0:
            raise LabError(f"swanctl --load-all on {self.node} failed: {cp.stdout}{cp.stderr}")

    def initiate(self, timeout: int = 15) -> subprocess.Popen[str]:
        """Start ``--initiate`` in the background (so several clients start at once)."""
        argv = ["env", f"STRONGSWAN_CONF={self.conf}", "swanctl", "--initiate", "--child", "home",
                "--timeout", str(timeout), "--uri", f"unix://{self.vici}"]
        return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def list_sas(self) -> str:
        return self.swanctl("--list-sas").stdout

    def stop(self) -> None:
        if self.proc is not None:
            self.lab.forget(self.proc)
            self.proc = None
