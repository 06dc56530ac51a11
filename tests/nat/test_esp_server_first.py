"""ESP in spi mode when the server sends first on a new SA (issue 10 §3; docs/vpn.md).

Every scenario runs the whole exchange through the router (``EspNet.ike_exchange``):
the host's IKE request, the server's answer -- after which the server uses the SA at
once -- and the host's own traffic a while after it got the answer.  Whatever the
number of hosts and the timing of their exchanges, no inbound ESP packet may reach
a host it does not belong to, and every SA must be delivered.
"""
from __future__ import annotations

import pytest

import passnat
from tests.nat.esp_sim import SA, SERVER, WAN, EspNet, Stats, _esp
from tests.nat.helpers import counters, one

BASE = """\
interface lan0 add 192.168.0.1/24
interface lan1 add 203.0.113.1/24
route add default 203.0.113.254
nat napt add private 192.168.0.0-192.168.0.255 interface lan1
"""
PC = ["192.168.0.11", "192.168.0.12", "192.168.0.13", "192.168.0.14"]


def router(extra: str = "") -> passnat.Router:
    return passnat.Router(passnat.parse_config(BASE + extra))


def sa(i: int, generation: int = 0) -> SA:
    return SA(PC[i], out_spi=0x1000 * (i + 1) + 1 + 0x100 * generation,
              in_spi=0x1000 * (i + 1) + 2 + 0x100 * generation)


def assert_every_sa_delivered(stats: Stats, sas: list[SA]) -> None:
    assert stats.wrong == [], f"inbound ESP delivered to the wrong host: {stats.wrong[:5]}"
    assert stats.lost_late == [], f"lost outside the settling window: {stats.lost_late[:5]}"
    for s in sas:
        assert stats.per_sa.get(s.in_spi, 0) > 0, f"SA 0x{s.in_spi:x} of {s.host} never delivered"


TIMINGS = {
    "sequential": 3.0,  # each exchange long done before the next
    "near-simultaneous-10ms": 0.01,
    "near-simultaneous-1ms": 0.001,
    "simultaneous": 0.0,
}


@pytest.mark.parametrize("hosts", [2, 3, 4])
@pytest.mark.parametrize("timing", list(TIMINGS))
def test_server_first_on_every_sa_with_rekeys(hosts: int, timing: str) -> None:
    spacing = TIMINGS[timing]
    net = EspNet(router())
    sas: list[SA] = []
    for i in range(hosts):
        first = net.add_sa(sa(i))
        rekey_at = 15.0 + i * spacing
        net.ike_exchange(PC[i], i * spacing, first, exchange=35, host_stop=rekey_at + 1.0)
        new = net.add_sa(sa(i, generation=1))  # CREATE_CHILD_SA: the server first again
        net.ike_exchange(PC[i], rekey_at, new, exchange=36, host_stop=30.0)
        sas += [first, new]
    stats = net.run(30.0)
    assert_every_sa_delivered(stats, sas)
    c = counters(net.r)
    assert c["ike_child_sa_exchanges"] == 2 * hosts
    assert c.get("esp_ambiguous_spi", 0) == 0
    if spacing < 0.01:  # exchanges that overlap took turns
        assert c["ike_held_for_pairing"] > 0
    recs = {s["inside"]: s["esp"] for s in net.r.sessions(30.0) if s["protocol"] == "esp"}
    for i in range(hosts):
        pairs = [[f"0x{s.out_spi:08x}", f"0x{s.in_spi:08x}"] for s in sas if s.host == PC[i]]
        assert recs[PC[i]]["pairs"] == pairs


@pytest.mark.parametrize("hosts", [2, 3, 4])
def test_mixed_server_first_and_host_first_exchanges_at_once(hosts: int) -> None:
    net = EspNet(router())
    sas = []
    for i in range(hosts):
        s = net.add_sa(sa(i))
        if i % 2:
            net.ike_exchange(PC[i], 0.0005 * i, s, server_first=None, host_first=0.001,
                             host_stop=10.0)  # the host first
        else:
            net.ike_exchange(PC[i], 0.0005 * i, s, server_first=0.001, host_first=0.3,
                             host_stop=10.0)  # the server first
        sas.append(s)
    stats = net.run(10.0)
    assert_every_sa_delivered(stats, sas)


def test_the_issue_case_a_new_host_behind_a_paired_one() -> None:
    """PC0 runs a paired SA; PC1 completes IKE and the server's first ESP on PC1's SA comes
    before PC1 sent any: it goes to PC1 (its ESP session made from the exchange), not PC0."""
    net = EspNet(router())
    a = net.add_sa(sa(0))
    net.traffic(a, 0.0, 10.0, 0.01)  # an SA without a visible exchange (keyed long ago)
    b = net.add_sa(sa(1))
    net.ike_exchange(PC[1], 5.0, b, server_first=0.001, host_first=None)  # PC1 never sends
    stats = net.run(10.0)
    assert_every_sa_delivered(stats, [a, b])
    assert counters(net.r)["esp_session_from_ike_hint"] == 1
    rec = [s for s in net.r.sessions(10.0) if s["protocol"] == "esp" and s["inside"] == PC[1]][0]
    assert rec["esp"]["in_spis"] == ["0x00002002"] and rec["esp"]["state"] == "waiting for outbound SPI"


def _paired_pc0() -> tuple[passnat.Router, EspNet]:
    r = router()
    one(r.handle("lan0", _esp(PC[0], SERVER, 0x11, 1, b"a"), 0.0))
    one(r.handle("lan1", _esp(SERVER, WAN, 0x12, 1, b"a"), 0.01))  # PC0 paired, the only member
    return r, EspNet(r)


def test_the_sole_member_never_gets_an_spi_while_another_hosts_exchange_is_pending() -> None:
    r, net = _paired_pc0()
    net.now = 1.0
    net._ike((PC[1], 35))  # PC1's exchange answered; PC1 has no ESP session
    # an SA we never saw start (sequence 500): not given to the sole member PC0 -- held
    assert r.handle("lan1", _esp(SERVER, WAN, 0x33, 500, b"?"), 1.01) == []
    assert counters(r)["esp_inbound_held_ambiguous"] == 1
    # a fresh SPI after the answer is PC1's
    assert one(r.handle("lan1", _esp(SERVER, WAN, 0x22, 1, b"b"), 1.02)).dst == PC[1]


def test_without_a_pending_exchange_the_sole_member_rule_still_applies() -> None:
    r, _ = _paired_pc0()
    assert one(r.handle("lan1", _esp(SERVER, WAN, 0x33, 500, b"?"), 1.0)).dst == PC[0]


def test_an_spi_seen_before_the_exchange_was_answered_is_not_that_hosts() -> None:
    r, net = _paired_pc0()
    one(r.handle("lan0", _esp(PC[2], SERVER, 0x31, 1, b"c"), 0.1))
    one(r.handle("lan1", _esp(SERVER, WAN, 0x32, 1, b"c"), 0.11))  # PC2 paired too
    assert r.handle("lan1", _esp(SERVER, WAN, 0x44, 1, b"?"), 0.95) == []  # nobody to tell: held
    net.now = 1.0
    net._ike((PC[1], 35))  # PC1's exchange is answered after 0x44 was first seen
    assert r.handle("lan1", _esp(SERVER, WAN, 0x44, 2, b"?"), 1.01) == []  # so 0x44 is not PC1's
    assert one(r.handle("lan1", _esp(SERVER, WAN, 0x22, 1, b"b"), 1.02)).dst == PC[1]
    assert counters(r)["esp_inbound_held_ambiguous"] == 2


def test_ike_of_a_second_host_waits_for_the_first_hosts_spi_then_goes() -> None:
    r = router()
    net = EspNet(r)
    a, b = net.add_sa(sa(0)), net.add_sa(sa(1))
    net.ike_exchange(PC[0], 0.0, a, server_first=0.5, host_first=None)  # the server waits 500 ms
    net.ike_exchange(PC[1], 0.001, b, server_first=0.001, host_first=None)
    stats = net.run(5.0)
    assert_every_sa_delivered(stats, [a, b])
    c = counters(r)
    assert c["ike_held_for_pairing"] == 1 and c.get("esp_inbound_held_ambiguous", 0) == 0


def test_a_silent_first_exchange_holds_the_second_only_for_the_window() -> None:
    """The documented limit: PC0's exchange makes an SA nobody uses.  PC1's exchange waits one
    pairing window, then goes; its server-first SPI could now be either host's new SA, so it
    is held (never guessed) until PC0's exchange stops naming PC0 (10 s), then it is PC1's."""
    r = router()
    net = EspNet(r)
    a, b = net.add_sa(sa(0)), net.add_sa(sa(1))
    net.ike_exchange(PC[0], 0.0, a, server_first=None, host_first=None)
    net.ike_exchange(PC[1], 0.001, b, server_first=0.001, server_count=1300, host_first=None)
    stats = net.run(14.0)
    assert stats.wrong == []
    assert stats.per_sa[b.in_spi] > 300  # from 10 s on
    c = counters(r)
    assert c["ike_held_for_pairing"] == 1 and c["esp_ambiguous_spi"] > 0
