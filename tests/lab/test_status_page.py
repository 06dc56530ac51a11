"""The status page in a real browser: the lab's raw-ESP scenario through passnat, then headless
Chromium (in the router namespace, where the endpoint listens on loopback) renders ``/``.

The rendered DOM must list the three ESP hosts of the scenario under their
server, paired, with their SPIs; the screenshot is kept in the test's output
directory (pytest's ``tmp_path``, printed with the result).
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from passnat.lab.lab import Lab
from passnat.lab.scenarios import BY_ID, run_scenario
from passnat.lab.topology import HOSTS

pytestmark = pytest.mark.lab

PORT = 19470
BROWSER = str(Path(__file__).with_name("browser.py"))


def test_status_page_lists_the_lab_esp_hosts(lab: Lab, tmp_path: Path) -> None:
    for tool in ("chromium", "chromedriver"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing: run `make deps` (scripts/install-deps.sh installs chromium, chromium-driver)")
    backend = lab.backend("passnat")
    backend.extra_args = ["--http", f"127.0.0.1:{PORT}"]  # type: ignore[attr-defined]
    try:
        lab.use_router("passnat")
        outcome = run_scenario(lab, BY_ID["esp-3hosts-spi"])
        assert outcome.ok, outcome.summary
        shot = tmp_path / "status-page.png"
        res = lab.run_in("router", [sys.executable, BROWSER, f"http://127.0.0.1:{PORT}/", str(shot)], check=False,
                         timeout=120)
        assert res.returncode == 0, res.stderr[-3000:]
        page = json.loads(res.stdout.strip().splitlines()[-1])
    finally:
        backend.extra_args = []  # type: ignore[attr-defined]
        lab.use_router("passnat")
    print(f"screenshot: {shot}")
    srv1 = HOSTS["srv1"].addr
    hosts = {HOSTS[h].addr for h in ("pc1", "pc2", "pc3")}
    esp = {r["host"]: r for r in page["esp"] if r["server"] == srv1}
    assert set(esp) == hosts, page["esp"]
    for r in esp.values():
        assert r["displayed"] and "paired" in r["text"] and "0x" in r["text"], r
    assert page["interfaces"] == ["lan0", "lan1"]
    assert "esp-shared" in page["doctor"]
    assert int(page["sessions"]) >= 3 and page["data_plane"] in ("compiled", "python")
    assert page["scripts"] == 0  # no JavaScript
    for ident, c in page["charts"].items():
        assert c["displayed"] and c["width"] > 100 and c["height"] > 50, (ident, c)
    assert page["charts"]["chart-sessions"]["series"] == 1
    assert shot.stat().st_size > 10_000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
