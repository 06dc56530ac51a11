"""The lab's own promises: two labs coexist, ``down`` removes everything (also after a crash),
the CLI's up/exec/status/down work, and ``passnat run`` outlives the ``lab up`` command."""
from __future__ import annotations

import subprocess
import sys

import pytest

from passnat.lab.lab import Lab
from passnat.lab.proc import list_namespaces, pid_alive
from tests.lab.conftest import lab_preconditions, remove_files, unique_prefix

pytestmark = pytest.mark.lab


def passnat(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "passnat", *args], capture_output=True, text=True,
                          timeout=timeout, check=False)


def test_second_lab_coexists_and_down_cleans_up_after_a_crash(lab: Lab) -> None:
    lab_preconditions()
    other = Lab(unique_prefix("pc"))
    try:
        other.up("kernel")
        sleeper = other.spawn("sleeper", "srv2", ["sleep", "300"])
        assert set(other.topo.existing()) == set(other.topo.namespaces)
        assert set(lab.topo.existing()) == set(lab.topo.namespaces), "the shared lab was disturbed"
        ping = other.run_in("pc1", ["ping", "-c", "1", "-W", "2", "203.0.113.10"], check=False)
        assert ping.returncode == 0, ping.stdout + ping.stderr
        # a crash: a new process knows only the prefix (its state file is all that is left)
        survivor = Lab(other.prefix)
        assert survivor.read_state().get("router") == "kernel"
        removed = survivor.down()
        assert sorted(removed) == sorted(other.topo.namespaces)
        assert not pid_alive(sleeper.pid) or sleeper.wait(2) is not None
        assert not [n for n in list_namespaces() if n.startswith(other.prefix)]
        assert not survivor.state_path.exists()
        assert set(lab.topo.existing()) == set(lab.topo.namespaces), "down removed another lab"
    finally:
        other.down()
        remove_files(other)


def test_cli_up_exec_status_down() -> None:
    lab_preconditions()
    prefix = unique_prefix("pk")
    try:
        up = passnat("lab", "up", "--prefix", prefix)
        assert up.returncode == 0, up.stdout + up.stderr
        assert "nat napt add private 192.168.0.0/24 interface lan1" in up.stdout
        ex = passnat("lab", "exec", "--prefix", prefix, "pc2", "ping", "-c", "2", "-W", "2", "203.0.113.20")
        assert ex.returncode == 0 and "2 received" in ex.stdout, ex.stdout + ex.stderr
        st = passnat("lab", "status", "--prefix", prefix)
        assert st.returncode == 0, st.stdout + st.stderr
        assert "router: passnat" in st.stdout
        assert "icmp" in st.stdout and "192.168.0.12" in st.stdout, st.stdout  # the ping's session
        daemon = [ln for ln in st.stdout.splitlines() if ln.strip().startswith("router ")]
        assert daemon and "python" in daemon[0], st.stdout  # passnat run outlived `lab up`
    finally:
        down = passnat("lab", "down", "--prefix", prefix)
        remove_files(Lab(prefix))
    assert down.returncode == 0, down.stdout + down.stderr
    assert not [n for n in list_namespaces() if n.startswith(prefix)]
    st = passnat("lab", "status", "--prefix", prefix)
    assert st.returncode == 3 and "down" in st.stdout
