"""One lab shared by the lab tests (root, the Debian packages of scripts/install-deps.sh).

The lab gets a unique prefix per run (``pt<hex>-``) and is removed at the end
of the session, also when a test fails or the run is interrupted (SIGTERM is
turned into KeyboardInterrupt so pytest still runs the teardown).
"""
from __future__ import annotations

import os
import secrets
import shutil
import signal
from collections.abc import Iterator
from types import FrameType

import pytest

from passnat.lab.lab import Lab

TOOLS = ("ip", "nft", "conntrack", "ethtool", "pptp", "pptpd", "swanctl", "iperf3", "unshare", "keepalived")


def lab_preconditions() -> None:
    """Fail (never skip) when the lab cannot run: CI runs as root with the packages installed."""
    if os.geteuid() != 0:
        pytest.fail("the lab tests need root (network namespaces); run `make test` as root")
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        pytest.fail(f"missing {', '.join(missing)}: run `make deps` (scripts/install-deps.sh)")


def unique_prefix(tag: str = "pt") -> str:
    return f"{tag}{secrets.token_hex(3)}-"


def _term(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def remove_files(lab: Lab) -> None:
    """Delete a lab's run directory (its logs) once the lab is down."""
    shutil.rmtree(lab.run_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def lab(request: pytest.FixtureRequest) -> Iterator[Lab]:
    lab_preconditions()
    old = signal.signal(signal.SIGTERM, _term)
    lab = Lab(unique_prefix())
    failed = request.session.testsfailed
    try:
        lab.up("passnat")
        yield lab
    finally:
        lab.down()
        signal.signal(signal.SIGTERM, old)
        if request.session.testsfailed == failed:
            remove_files(lab)  # kept when a test failed: the logs say why
