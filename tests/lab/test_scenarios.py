"""Every scenario of issue 6 through passnat (``passnat run`` in the router namespace).

Each test fails with the scenario's summary, details and the router's
session lines, so a failure report says what went wrong on the wire.
"""
from __future__ import annotations

import pytest

from passnat.lab.lab import Lab
from passnat.lab.scenarios import SCENARIOS, run_scenario

pytestmark = pytest.mark.lab


def explain(o: object) -> str:
    from passnat.lab.scenarios import Outcome

    assert isinstance(o, Outcome)
    return "\n".join([f"{o.scenario} on {o.router}: {o.verdict}: {o.summary}", *o.details,
                      "router sessions:", *o.evidence, *(o.error or "").splitlines()])


@pytest.mark.parametrize("sc", SCENARIOS, ids=[s.id for s in SCENARIOS])
def test_scenario_through_passnat(lab: Lab, sc: object) -> None:
    from passnat.lab.scenarios import Scenario

    assert isinstance(sc, Scenario)
    if lab.router is None or lab.router.name != "passnat":
        lab.use_router("passnat")
    o = run_scenario(lab, sc)
    assert o.ok, explain(o)


def test_three_host_esp_check_catches_the_kernel_nat(lab: Lab) -> None:
    """The three-host ESP verdict fails where ESP does not pass: the kernel NAT drops pc2 and pc3."""
    from passnat.lab.scenarios import BY_ID

    try:
        lab.use_router("kernel")
        o = run_scenario(lab, BY_ID["esp-3hosts-spi"])
    finally:
        lab.use_router("passnat")
    assert o.ok is False, explain(o)
    assert "pc2 (cbc) 0/" in o.summary or "pc3 (gcm) 0/" in o.summary, explain(o)
