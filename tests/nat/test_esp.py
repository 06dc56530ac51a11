"""ESP passthrough (R10, R11, B1): SEIL's first-come mode and passnat's SPI mode."""
from __future__ import annotations

import struct

import pytest
from scapy.all import ICMP, IP, raw
from scapy.layers.inet import IPerror

import passnat
from tests.nat.esp_sim import SA, SERVER, WAN, EspNet, _esp
from tests.nat.helpers import counters, icmp_error, one

BASE = """\
interface lan0 add 192.168.0.1/24
interface lan1 add 203.0.113.1/24
route add default 203.0.113.254
nat napt add private 192.168.0.0-192.168.0.255 interface lan1
"""
PC = ["192.168.0.11", "192.168.0.12", "192.168.0.13"]


def router(mode: str = "spi", extra: str = "") -> passnat.Router:
    return passnat.Router(passnat.parse_config(BASE + f"nat option esp-passthrough {mode}\n" + extra))


def sa(i: int, generation: int = 0) -> SA:
    return SA(PC[i], out_spi=0x1000 * (i + 1) + 1 + 0x100 * generation,
              in_spi=0x1000 * (i + 1) + 2 + 0x100 * generation)


def assert_clean(stats, min_delivered: int) -> None:  # noqa: ANN001
    assert stats.wrong == [], f"inbound ESP delivered to the wrong host: {stats.wrong[:5]}"
    assert stats.lost_late == [], f"lost outside the settling window: {stats.lost_late[:5]}"
    assert stats.delivered >= min_delivered


# --------------------------------------------------------------------- SPI mode


@pytest.mark.parametrize("starts", [(0.0, 3.0), (0.0, 0.02), (0.0, 0.0)])
def test_spi_two_hosts_one_server(starts: tuple[float, float]) -> None:
    net = EspNet(router())
    for i, t in enumerate(starts):
        net.traffic(net.add_sa(sa(i)), t, 50.0, 0.01)
    stats = net.run(50.0)
    assert stats.sent_in >= 9000
    assert_clean(stats, stats.sent_in - 10)


@pytest.mark.parametrize("starts", [(0.0, 2.0, 4.0), (0.0, 0.02, 0.045), (0.0, 0.0, 0.0)])
def test_spi_three_hosts_with_a_rekey(starts: tuple[float, float, float]) -> None:
    net = EspNet(router())
    sas = [net.add_sa(sa(i)) for i in range(3)]
    for s, t in zip(sas, starts):
        net.traffic(s, t, 40.0, 0.01)
    # host 1 rekeys at t=20: new SPIs both ways, the old SA runs on for a second
    new = net.add_sa(sa(1, generation=1))
    net.traffic(new, 20.0, 40.0, 0.01)
    net.schedule(21.0, "stop", sas[1])
    stats = net.run(40.0)
    assert stats.sent_in >= 10000
    assert_clean(stats, stats.sent_in - 20)
    [rec] = [s for s in net.r.sessions(40.0) if s["protocol"] == "esp" and s["inside"] == PC[1]]
    assert rec["esp"]["pairs"] == [["0x00002001", "0x00002002"], ["0x00002101", "0x00002102"]]
    assert rec["esp"]["state"] == "paired"


def test_spi_server_sends_first_on_a_rekeyed_sa() -> None:
    """After a rekey the server may use the host's new inbound SPI before the host sends."""
    net = EspNet(router())
    sas = [net.add_sa(sa(i)) for i in range(3)]
    for s in sas:
        net.traffic(s, 0.0, 20.0, 0.01)
    new = net.add_sa(sa(2, generation=1))
    net.server_push(new, 10.0, 20, 0.01)  # the server starts on the new SA...
    net.traffic(new, 10.3, 20.0, 0.01)  # ...and the host follows 300 ms later
    stats = net.run(20.0)
    assert_clean(stats, stats.sent_in - 40)
    assert counters(net.r).get("esp_inbound_held_ambiguous", 0) > 0


def test_spi_ike_hint_binds_server_first_sa() -> None:
    net = EspNet(router())
    sas = [net.add_sa(sa(i)) for i in range(2)]
    for s in sas:
        net.traffic(s, 0.0, 10.0, 0.01)
    new = net.add_sa(sa(0, generation=1))
    net.ike(PC[0], 5.0, exchange=36)  # CREATE_CHILD_SA answered by the server
    net.server_push(new, 5.001, 10, 0.01)
    stats = net.run(10.0)
    assert_clean(stats, stats.sent_in - 2)
    assert counters(net.r)["ike_child_sa_exchanges"] == 1
    assert counters(net.r).get("esp_inbound_held_ambiguous", 0) == 0


def test_spi_single_host_behaves_like_first_come() -> None:
    net = EspNet(router())
    s = net.add_sa(sa(0))
    net.server_push(s, 0.5, 5, 0.01)  # server first: the only host talking ESP to it gets it
    net.traffic(s, 0.0, 5.0, 0.05)
    stats = net.run(5.0)
    assert_clean(stats, stats.sent_in)


def test_spi_unsolicited_inbound_esp_is_dropped() -> None:
    r = router()
    assert r.handle("lan1", _esp(SERVER, WAN, 0x77, 1, b"x"), 0.0) == []
    assert counters(r)["esp_unsolicited"] == 1
    # and from a server nobody talks to while others talk to another server
    r.handle("lan0", _esp(PC[0], "203.0.113.20", 1, 1, b"x"), 0.0)
    assert r.handle("lan1", _esp(SERVER, WAN, 0x77, 1, b"x"), 0.0) == []
    assert counters(r)["esp_unsolicited"] == 2


def test_spi_two_hosts_two_servers_independent() -> None:
    r = router()
    one(r.handle("lan0", _esp(PC[0], SERVER, 0x11, 1, b"a"), 0.0))
    one(r.handle("lan0", _esp(PC[1], "203.0.113.20", 0x21, 1, b"b"), 0.0))
    assert one(r.handle("lan1", _esp("203.0.113.20", WAN, 0x22, 1, b"b"), 0.1)).dst == PC[1]
    assert one(r.handle("lan1", _esp(SERVER, WAN, 0x12, 1, b"a"), 0.1)).dst == PC[0]


def test_spi_second_hosts_new_sa_waits_for_the_open_slot() -> None:
    r = router()
    a = one(r.handle("lan0", _esp(PC[0], SERVER, 0x11, 1, b"a"), 0.0))
    assert a.src == WAN
    assert r.handle("lan0", _esp(PC[1], SERVER, 0x21, 1, b"b"), 0.001) == []  # held
    outs = r.handle("lan1", _esp(SERVER, WAN, 0x12, 1, b"a"), 0.002)
    assert [(o.interface, IP(o.packet).dst) for o in outs] == [("lan0", PC[0]), ("lan1", SERVER)]
    assert one(r.handle("lan1", _esp(SERVER, WAN, 0x22, 1, b"b"), 0.003)).dst == PC[1]
    recs = {s["inside"]: s["esp"] for s in r.sessions(0.01) if s["protocol"] == "esp"}
    assert recs[PC[0]]["pairs"] == [["0x00000011", "0x00000012"]]
    assert recs[PC[1]]["pairs"] == [["0x00000021", "0x00000022"]]


def test_spi_pairing_window_releases_a_silent_slot() -> None:
    r = router(extra="nat option esp-pairing-window 500\n")
    one(r.handle("lan0", _esp(PC[0], SERVER, 0x11, 1, b"a"), 0.0))
    assert r.handle("lan0", _esp(PC[1], SERVER, 0x21, 1, b"b"), 0.1) == []
    assert r.next_deadline() == pytest.approx(0.5)
    released = r.on_timer(0.5)
    assert [IP(o.packet).src for o in released] == [WAN]
    assert one(r.handle("lan1", _esp(SERVER, WAN, 0x22, 1, b"b"), 0.6)).dst == PC[1]


def test_icmp_frag_needed_quoting_esp_reaches_only_its_host() -> None:
    for mode in ("spi", "first-come"):
        r = router(mode)
        one(r.handle("lan0", _esp(PC[0], SERVER, 0x11, 1, b"a"), 0.0))
        one(r.handle("lan1", _esp(SERVER, WAN, 0x12, 1, b"a"), 0.01))
        outs = r.handle("lan0", _esp(PC[1], SERVER, 0x21, 1, b"b"), 0.02)
        if not outs:  # spi mode holds B's first packet until A's slot closes; it is closed here
            raise AssertionError("B's packet should leave")
        b_sent = outs[0].packet
        err = one(r.handle("lan1", icmp_error("198.51.100.1", WAN, b_sent, 3, 4, mtu=1400), 0.03), "lan0")
        assert err.dst == PC[1], mode
        assert err[IPerror].src == PC[1] and err[ICMP].nexthopmtu == 1400


# --------------------------------------------------------------- first-come mode


def test_first_come_reproduces_seil() -> None:
    """R10: the first host to send ESP to a server gets every inbound ESP from it."""
    r = router("first-come")
    a = one(r.handle("lan0", _esp(PC[0], SERVER, 0x11, 1, b"a"), 0.0))
    b = one(r.handle("lan0", _esp(PC[1], SERVER, 0x21, 1, b"b"), 0.1))
    assert a.src == b.src == WAN  # B's outbound is still translated and sent
    assert one(r.handle("lan1", _esp(SERVER, WAN, 0x12, 1, b"a"), 0.2)).dst == PC[0]
    assert one(r.handle("lan1", _esp(SERVER, WAN, 0x22, 1, b"b"), 0.2)).dst == PC[0]  # B's SA: to A
    # a different server is an independent session: B owns it
    one(r.handle("lan0", _esp(PC[1], "203.0.113.20", 0x31, 1, b"b"), 0.3))
    assert one(r.handle("lan1", _esp("203.0.113.20", WAN, 0x32, 1, b"b"), 0.4)).dst == PC[1]
    assert counters(r)["esp_shared_remote"] == 1


def test_first_come_owner_changes_only_when_its_session_expires() -> None:
    r = router("first-come", "nat timeout protocol esp 60\n")
    one(r.handle("lan0", _esp(PC[0], SERVER, 0x11, 1, b"a"), 0.0))
    for t in range(10, 100, 10):
        one(r.handle("lan0", _esp(PC[1], SERVER, 0x21, t, b"b"), float(t)))
        if t == 30:  # inbound goes to the owner (and refreshes it: last packet at 30 s)
            assert one(r.handle("lan1", _esp(SERVER, WAN, 0x22, 1, b"b"), 30.0)).dst == PC[0]
    r.on_timer(90.5)  # the owner idle for 60 s is gone; the second host now gets the server's ESP
    assert one(r.handle("lan1", _esp(SERVER, WAN, 0x22, 2, b"b"), 95.0)).dst == PC[1]


def test_first_come_simulation_only_first_host_served() -> None:
    net = EspNet(router("first-come"))
    sas = [net.add_sa(sa(i)) for i in range(3)]
    for i, s in enumerate(sas):
        net.traffic(s, 0.5 * i, 20.0, 0.02)
    stats = net.run(20.0)
    wrong_hosts = {dst for _, dst, _, _ in stats.wrong}
    assert wrong_hosts == {PC[0]}  # everything for pc2 and pc3 went to pc1
    assert stats.delivered > 0


def test_esp_listing_shows_spis_and_owner() -> None:
    r = router()
    one(r.handle("lan0", _esp(PC[0], SERVER, 0xABCD0001, 1, b"a"), 0.0))
    one(r.handle("lan1", _esp(SERVER, WAN, 0x1234, 1, b"a"), 0.1))
    [rec] = [s for s in r.sessions(0.2) if s["protocol"] == "esp"]
    assert rec["inside"] == PC[0] and rec["remote"] == SERVER and rec["outside"] == WAN
    assert rec["esp"] == {"mode": "spi", "state": "paired", "out_spis": ["0xabcd0001"],
                          "in_spis": ["0x00001234"], "pairs": [["0xabcd0001", "0x00001234"]]}


def test_truncated_esp_is_dropped_with_reason() -> None:
    r = router()
    bad = raw(IP(src=PC[0], dst=SERVER, proto=50) / b"\x00\x01")
    assert r.handle("lan0", bad, 0.0) == []
    assert counters(r)["bad_l4_header"] == 1
    assert struct  # keep import used


def test_esp_server_behind_snapt_pairs_without_a_slot() -> None:
    """An inside ESP server hears its client first: its SPIs pair at once, listed as paired."""
    r = router(extra="nat snapt add protocol esp forward 192.168.0.20 interface lan1\n")
    client = "203.0.113.20"
    assert one(r.handle("lan1", _esp(client, WAN, 0x4001, 1, b"c"), 0.0)).dst == "192.168.0.20"
    [rec] = [s for s in r.sessions(0.0) if s["protocol"] == "esp"]
    assert rec["type"] == "snapt" and rec["esp"]["state"] == "waiting for outbound SPI"
    assert one(r.handle("lan0", _esp("192.168.0.20", client, 0x4002, 1, b"s"), 0.01)).src == WAN
    [rec] = [s for s in r.sessions(0.02) if s["protocol"] == "esp"]
    assert rec["esp"]["state"] == "paired" and rec["esp"]["pairs"] == [["0x00004002", "0x00004001"]]
    # an inside client to another server is not held behind it
    one(r.handle("lan0", _esp(PC[0], SERVER, 0x11, 1, b"a"), 0.03))
