"""Issue 12's acceptance test: two passnat routers with keepalived on shared LAN and WAN switches.

The master's passnat is killed with SIGKILL in the middle of five flows -- a
TCP transfer, a UDP flow, a PPTP call (pptp/pptpd), two raw-ESP hosts to one
server in ``spi`` mode and an IKEv2 NAT-T tunnel (strongSwan) -- and:

  * within 3 s the backup forwards (keepalived's track script notices, the
    group fails over, ``passnat ha master`` runs, gratuitous ARP);
  * every flow continues on the same external mapping: one TCP connection
    whose bytes arrive verified, one UDP source at the server, one PPTP call
    with no reply of another call, the same IKE_SA, ESP replies to each host;
  * nothing reaches the wrong inside host (no foreign SPI, no foreign LCP tag);
  * the old master's passnat comes back as backup and gets a full transfer,
    and a planned switch back (keepalived's track file) loses nothing either.

The test prints the failover time and what each flow saw (passnat/lab/ha.py
runs the experiment; ``passnat lab failover`` and ``make demo`` run it too).
"""
from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest

from passnat.lab.demo import failover_text
from passnat.lab.ha import HaPair, failover
from passnat.lab.lab import Lab
from tests.lab.conftest import _term, lab_preconditions, remove_files, unique_prefix

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def ha_lab(request: pytest.FixtureRequest) -> Iterator[Lab]:
    lab_preconditions()
    old = signal.signal(signal.SIGTERM, _term)
    lab = Lab(unique_prefix("ph"), ha=True)
    failed = request.session.testsfailed
    try:
        lab.up("passnat")
        yield lab
    finally:
        lab.stop_peers()
        lab.down()
        signal.signal(signal.SIGTERM, old)
        if request.session.testsfailed == failed:
            remove_files(lab)


def test_failover_keeps_every_flow(ha_lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    pair = ha_lab.router
    assert isinstance(pair, HaPair)
    res = failover(ha_lab, pair, progress=lambda t: None, duration=40.0)
    text = failover_text(res)
    with capsys.disabled():
        print("\n" + text)
    assert res["failover_s"] <= 3.0, text
    for name, flow in res["flows"].items():
        assert flow["ok"], f"{name}: {flow['text']}\n{text}"
    assert res["mappings"]["ok"] and res["mappings_back"]["ok"], text
    assert res["rejoin"]["role"] == "backup" and res["rejoin"]["bulk"].get("received"), text
    assert res["ok"], text
