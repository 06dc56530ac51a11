"""``passnat run --http`` as systemd would run it, in the namespace lab of tests/io/netlab.py.

One daemon, started with a fake ``$NOTIFY_SOCKET`` and ``$JOURNAL_STREAM``
naming its stderr file: READY=1 arrives only once the control socket and the
HTTP endpoint answer; SIGHUP gives RELOADING=1 then READY=1, SIGTERM
STOPPING=1.  The log lines carry journald priorities and no timestamps.  A
real Prometheus server (Debian's package) in the router namespace scrapes
``/metrics`` and its HTTP API returns passnat series.  Everything listens on
the router namespace's loopback only.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import sys
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from passnat.control.client import request
from tests.io.netlab import ROUTER_LAN, SRV, NetLab, Proc
from tests.io.test_integration import CONFIG, ping

pytestmark = pytest.mark.integration

HTTP_PORT = 19469
PROM_PORT = 19090
HTTPGET = str(Path(__file__).with_name("httpget.py"))


def get(lab: NetLab, url: str, method: str = "GET") -> dict[str, Any]:
    res = lab.exec("r", sys.executable, HTTPGET, url, method, check=False, timeout=30)
    if res.returncode != 0:
        raise AssertionError(f"GET {url} failed: {res.stderr}")
    data: dict[str, Any] = json.loads(res.stdout)
    return data


class Notify:
    def __init__(self, path: Path):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.got: list[str] = []

    def wait(self, first_line: str, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                msg = self.sock.recv(4096).decode()
            except TimeoutError:
                break
            self.got.append(msg)
            if msg.split("\n")[0] == first_line:
                return msg
        raise AssertionError(f"no {first_line} within {timeout} s; got {self.got}")


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NetLab]:
    if os.geteuid() != 0:
        pytest.fail("the integration tests need root (network namespaces, AF_PACKET)")
    lab = NetLab("svc", tmp_path_factory.mktemp("svclab"))
    try:
        lab.build_router_lab()
        yield lab
    finally:
        lab.close()


def test_notify_journald_http_and_a_real_prometheus(lab: NetLab, tmp_path: Path) -> None:
    conf = tmp_path / "router.conf"
    conf.write_text(CONFIG)
    ctl = str(tmp_path / "ctl.sock")
    log_path = tmp_path / "passnat.log"
    log_path.write_text("")
    st = os.stat(log_path)
    notify = Notify(tmp_path / "notify.sock")
    env = dict(os.environ, NOTIFY_SOCKET=notify.path, JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino}")
    argv = [sys.executable, "-m", "passnat", "run", "--config", str(conf), "--control", ctl,
            "--http", f"127.0.0.1:{HTTP_PORT}", "--log-level", "info"]
    daemon = Proc(lab.ns("r"), argv, stderr_path=log_path, env=env)
    lab.procs.append(daemon)
    try:
        ready = notify.wait("READY=1")
        assert "STATUS=forwarding on lan0=lan0, lan1=lan1" in ready
        # READY=1 means: every interface attached, the control socket and the endpoint answer
        assert request(ctl, "ping", timeout=5)["pid"] > 0
        assert get(lab, f"http://127.0.0.1:{HTTP_PORT}/healthz")["body"] == "ok\n"
        assert ping(lab, "pc", SRV) == 3 and ping(lab, "pc", ROUTER_LAN) == 3

        m = get(lab, f"http://127.0.0.1:{HTTP_PORT}/metrics")
        assert m["status"] == 200 and m["headers"]["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        fam = {f.name: f for f in text_string_to_metric_families(m["body"])}
        rx = {(s.labels["interface"], s.labels["direction"]): s.value for s in fam["passnat_interface_packets"].samples}
        assert rx[("lan0", "rx")] >= 6 and rx[("lan1", "tx")] >= 3
        assert get(lab, f"http://127.0.0.1:{HTTP_PORT}/metrics", "HEAD")["body"] == ""
        assert get(lab, f"http://127.0.0.1:{HTTP_PORT}/metrics", "POST")["status"] == 405
        assert get(lab, f"http://127.0.0.1:{HTTP_PORT}/nope")["status"] == 404
        page = get(lab, f"http://127.0.0.1:{HTTP_PORT}/")
        assert page["status"] == 200 and 'id="chart-sessions"' in page["body"]

        prometheus(lab, tmp_path)

        daemon.signal(signal.SIGHUP)
        assert notify.wait("RELOADING=1").startswith("RELOADING=1\nMONOTONIC_USEC=")
        assert notify.wait("READY=1")
        conf.write_text(CONFIG + "interface lan0 add bogus\n")
        daemon.signal(signal.SIGHUP)
        notify.wait("RELOADING=1")
        assert "last reload refused" in notify.wait("READY=1")
        assert daemon.stop(20) == 0
        notify.wait("STOPPING=1")
        assert [m.split("\n")[0] for m in notify.got] == ["READY=1", "RELOADING=1", "READY=1", "RELOADING=1",
                                                           "READY=1", "STOPPING=1"]
    finally:
        daemon.stop(10)
        notify.sock.close()
    text = log_path.read_text().splitlines()
    assert text and all(re.match(r"<[0-7]>passnat\.", line) for line in text), text[:5]
    assert not any(line[4:8].isdigit() for line in text)  # no timestamp of our own: journald adds it
    assert sum("data plane: " in line for line in text) == 1
    refused = [line for line in text if "NOT reloaded" in line]
    assert len(refused) == 1 and refused[0].startswith("<3>passnat.daemon: configuration NOT reloaded: 1 error(s)")
    assert re.search(r"router\.conf:\d+:20: error: expected an IPv4 address", refused[0])  # file:line:column, same line


def prometheus(lab: NetLab, tmp_path: Path) -> None:
    """A real Prometheus scrapes /metrics every second; its API must return passnat series."""
    exe = shutil.which("prometheus")
    if exe is None:
        pytest.fail("prometheus is missing: run `make deps` (scripts/install-deps.sh)")
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text(f"""\
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: passnat
    static_configs:
      - targets: ["127.0.0.1:{HTTP_PORT}"]
""")
    data = tmp_path / "tsdb"
    prom = lab.spawn("r", [exe, f"--config.file={cfg}", f"--storage.tsdb.path={data}",
                           f"--web.listen-address=127.0.0.1:{PROM_PORT}", "--log.level=warn"],
                     stderr_path=tmp_path / "prometheus.log")
    try:
        deadline = time.monotonic() + 60
        found: list[Any] = []
        while time.monotonic() < deadline and prom.alive():
            q = urllib.parse.quote('passnat_interface_packets_total{interface="lan0",direction="rx"}')
            try:
                res = get(lab, f"http://127.0.0.1:{PROM_PORT}/api/v1/query?query={q}")
            except AssertionError:
                res = {"status": 0}
            if res.get("status") == 200:
                found = json.loads(res["body"])["data"]["result"]
                if found:
                    break
            time.sleep(0.5)
        assert found, f"Prometheus returned no passnat series{prom.stderr_tail()}"
        assert found[0]["metric"]["job"] == "passnat" and float(found[0]["value"][1]) >= 6
        q = urllib.parse.quote('up{job="passnat"}')
        up = json.loads(get(lab, f"http://127.0.0.1:{PROM_PORT}/api/v1/query?query={q}")["body"])["data"]["result"]
        assert up and up[0]["value"][1] == "1"  # the scrape itself succeeded (parsed by Prometheus)
        q = urllib.parse.quote("passnat_build_info")
        info = json.loads(get(lab, f"http://127.0.0.1:{PROM_PORT}/api/v1/query?query={q}")["body"])["data"]["result"]
        assert info and info[0]["metric"]["version"]
    finally:
        prom.stop(10)
