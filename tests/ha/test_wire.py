"""The sync protocol on the wire: authentication, refusal of tampered and truncated messages, and
bounded memory when the peer stops reading.

The node under test is the real ``HaNode`` in a real poll reactor, on
loopback (127.0.0.1 for the node, 127.0.0.2 for the test's peer), with a
real engine behind it; the peer side is played by this test with the wire
module, so it can send exactly the bytes it wants.
"""
from __future__ import annotations

import gc
import json
import socket
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from ipaddress import IPv4Address
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import passnat
from passnat.config.model import HaSync
from passnat.ha import node as ha_node
from passnat.ha import sync, wire
from passnat.io.reactor import Reactor
from tests.nat.helpers import BASE, PC1, SRV, udp

KEY = "test-shared-key-0123456789"
NODE, PEER = "127.0.0.1", "127.0.0.2"


# ------------------------------------------------------------------ frames alone


def frames(key: bytes = KEY.encode()) -> tuple[wire.Encoder, wire.Decoder]:
    return wire.Encoder(key, b"C"), wire.Decoder(key, b"C")


def test_frames_round_trip_in_pieces() -> None:
    enc, dec = frames()
    data = b"".join(enc.message(wire.UPDATE, {"n": i}) for i in range(5))
    got = []
    for i in range(0, len(data), 7):  # a TCP stream cut anywhere
        got += dec.feed(data[i:i + 7])
    assert [json.loads(p)["n"] for _, p in got] == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("where", ["header", "payload", "mac"])
def test_a_tampered_frame_is_refused(where: str) -> None:
    enc, dec = frames()
    good = enc.message(wire.UPDATE, {"s": [1, 2, 3]})
    off = {"header": 12, "payload": wire.HEADER.size + 3, "mac": len(good) - 1}[where]
    bad = bytearray(good)
    bad[off] ^= 0x01
    with pytest.raises(wire.WireError) as e:
        dec.feed(bytes(bad))
    assert e.value.reason in ("auth_failed", "bad_frame")
    assert dec.feed(enc.message(wire.UPDATE, {})) == []  # nothing after a bad frame


def test_wrong_key_replay_reorder_and_reflection_are_refused() -> None:
    enc, _ = frames()
    m0, m1 = enc.message(wire.UPDATE, {"a": 0}), enc.message(wire.UPDATE, {"a": 1})
    with pytest.raises(wire.WireError, match="authentication"):
        wire.Decoder(b"another key entirely", b"C").feed(m0)
    dec = frames()[1]
    dec.feed(m0)
    with pytest.raises(wire.WireError, match="sequence"):
        dec.feed(m0)  # replayed
    with pytest.raises(wire.WireError, match="sequence"):
        frames()[1].feed(m1)  # the first frame missing
    with pytest.raises(wire.WireError, match="authentication"):
        wire.Decoder(KEY.encode(), b"S").feed(m0)  # sent back to its sender


def test_truncated_frame_is_refused_at_the_end_of_the_stream() -> None:
    enc, dec = frames()
    m = enc.message(wire.UPDATE, {"s": []})
    assert dec.feed(m[:-5]) == []
    with pytest.raises(wire.WireError) as e:
        dec.close()
    assert e.value.reason == "truncated"
    with pytest.raises(wire.WireError) as e2:
        frames()[1].feed(b"GET / HTTP/1.0\r\n\r\n\0\0")
    assert e2.value.reason == "bad_frame"
    huge = wire.HEADER.pack(wire.MAGIC, wire.VERSION, wire.UPDATE, 0, 0, wire.MAX_PAYLOAD + 1)
    with pytest.raises(wire.WireError, match="announced"):
        frames()[1].feed(huge)


# ------------------------------------------------------------------ a node on loopback


class FakeDaemon:
    """What ``HaNode`` uses of the daemon: config, engine, reactor, counters, clock."""

    def __init__(self, config: passnat.Config, control: str):
        self.config = config
        self.router = passnat.Router(config)
        self.reactor = Reactor()
        self.counters: Counter[str] = Counter()
        self.options = SimpleNamespace(control_path=control)
        self.links: dict[str, Any] = {}
        self.forwarding = True
        self.clock = time.monotonic

    def _update_addresses(self) -> None:
        return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind((NODE, 0))
        return int(s.getsockname()[1])


@pytest.fixture
def node(tmp_path: Path) -> Iterator[ha_node.HaNode]:
    port = free_port()
    # (the configuration language refuses loopback sync addresses: set them directly)
    ha = HaSync(peer=IPv4Address(PEER), local=IPv4Address(NODE), port=port, key=KEY)
    d = FakeDaemon(replace(passnat.parse_config(BASE), ha=ha), str(tmp_path / "ctl.sock"))
    n = ha_node.HaNode(d)  # type: ignore[arg-type]
    n.start()
    try:
        yield n
    finally:
        n.close()


def spin(n: ha_node.HaNode, seconds: float, until: Any = None) -> None:
    end = time.monotonic() + seconds
    while True:
        n.reactor.dispatch(n.reactor.poll(0.01 if seconds else 0))
        n.tick(n.daemon.clock(), None)
        if (until is not None and until()) or time.monotonic() >= end:
            return


class PeerClient:
    """The test as the peer that sends (connects to the node's listener)."""

    def __init__(self, n: ha_node.HaNode):
        self.sock = socket.create_connection((NODE, n.cfg.port), source_address=(PEER, 0), timeout=5)
        self.enc, self.dec = wire.Encoder(KEY.encode(), b"C"), wire.Decoder(KEY.encode(), b"S")
        spin(n, 0.2)
        self.sock.settimeout(2)
        (mtype, server_nonce), = self.dec.feed(self.sock.recv(4096))
        assert mtype == wire.CHALLENGE
        mine = wire.nonce()
        self.sock.sendall(self.enc.message(wire.HELLO, {"version": 1, "fields": list(sync.FIELDS),
                                                        "nonce": mine.hex(), "role": "master"}))
        k = wire.connection_key(KEY.encode(), server_nonce, mine)
        self.enc.rekey(k)
        self.dec.rekey(k)
        spin(n, 0.2, lambda: n.server is not None and n.server.ready)
        assert n.server is not None and n.server.ready

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)


def update(n: int, sport: int = 5000) -> dict[str, Any]:
    """A real master's update message with ``n`` UDP sessions."""
    r = passnat.Router(passnat.parse_config(BASE))
    st = sync.SyncState(r)
    st.record(True)
    for i in range(n):
        r.handle("lan0", udp(PC1, SRV, sport + i, 9000), 1.0)
    msg = st.take(1.0)
    assert msg is not None
    return json.loads(json.dumps(msg))


def test_node_refuses_and_counts_tampered_malformed_and_truncated_messages(node: ha_node.HaNode) -> None:
    node.set_role("backup")
    table = node.daemon.router.table
    # tampered: counted, nothing applied, the connection closed
    p = PeerClient(node)
    frame = bytearray(p.enc.message(wire.UPDATE, update(3)))
    frame[wire.HEADER.size + 10] ^= 0x20
    p.send(bytes(frame))
    spin(node, 1.0, lambda: node.counters["ha_sync_auth_failed"] > 0)
    assert node.counters["ha_sync_auth_failed"] == 1 and len(table) == 0 and node.server is None
    # authentic but malformed (a port out of range in the second record): refused whole, counted
    p = PeerClient(node)
    bad = update(3)
    bad["s"][1][sync._F["out_port"]] = 70000
    p.send(p.enc.message(wire.UPDATE, bad))
    spin(node, 1.0, lambda: node.counters["ha_sync_malformed"] > 0)
    assert node.counters["ha_sync_malformed"] == 1 and len(table) == 0
    p.send(p.enc.message(wire.UPDATE, {"now": "later"}))
    p.send(p.enc.frame(wire.UPDATE, b"\xff not json"))
    spin(node, 1.0, lambda: node.counters["ha_sync_malformed"] >= 3)
    assert node.counters["ha_sync_malformed"] >= 2 and len(table) == 0
    # the same connection still works for a good message
    if node.server is None:
        p = PeerClient(node)
    p.send(p.enc.message(wire.UPDATE, update(3)))
    spin(node, 1.0, lambda: len(table) == 3)
    assert len(table) == 3
    # truncated: the peer's connection ends inside a frame
    whole = p.enc.message(wire.UPDATE, update(2, sport=6000))
    p.send(whole[:len(whole) // 2])
    p.sock.close()
    spin(node, 1.0, lambda: node.counters["ha_sync_truncated"] > 0)
    assert node.counters["ha_sync_truncated"] == 1 and len(table) == 3


def test_a_peer_that_stops_reading_does_not_grow_memory(node: ha_node.HaNode, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ha_node, "CHANGED_MAX", 5000)
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((PEER, node.cfg.port))
    srv.listen(1)
    node.set_role("master")
    spin(node, 1.5, lambda: node.client is not None and node.client.state == "handshake")
    conn, _ = srv.accept()
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    enc, dec = wire.Encoder(KEY.encode(), b"S"), wire.Decoder(KEY.encode(), b"C")
    nonce = wire.nonce()
    conn.sendall(enc.frame(wire.CHALLENGE, nonce))
    spin(node, 1.0, lambda: node.client is not None and node.client.ready)
    assert node.client is not None and node.client.ready
    conn.settimeout(2)
    got: list[tuple[int, bytes]] = []
    while not got:
        got = dec.feed(conn.recv(1024))
    hello = json.loads(got[0][1])
    assert hello["fields"] == list(sync.FIELDS)
    k = wire.connection_key(KEY.encode(), nonce, bytes.fromhex(hello["nonce"]))
    enc.rekey(k)
    last_beat = 0.0
    # ... and the peer never reads again.  Churn: 3 rounds of 12,000 new sessions, all cleared again.
    router = node.daemon.router
    t = 10.0
    blocks = []  # Python's allocated memory blocks after each round (tracemalloc is too slow here)
    try:
        for rnd in range(3):
            for i in range(12000):
                router.handle("lan0", udp(PC1, SRV, 1024 + i, 9000 + rnd), t)
                if i % 500 == 0:
                    if time.monotonic() - last_beat > 0.5:  # alive, but not reading
                        conn.sendall(enc.message(wire.HEARTBEAT, {"now": 0.0, "role": "backup"}))
                        last_beat = time.monotonic()
                    spin(node, 0.0)
                    c = node.client
                    assert c is not None
                    assert len(c.out) <= ha_node.OUT_HIGH + 2 * (1 << 20), len(c.out)
                    assert node.sync.pending() <= ha_node.CHANGED_MAX + 600
            router.clear_sessions()
            t += 1000.0
            router.on_timer(t)  # the expiry wheel lets go of the removed sessions (it is lazy)
            spin(node, 0.2)
            gc.collect()
            blocks.append(sys.getallocatedblocks())
    finally:
        conn.close()
        srv.close()
    assert node.counters["ha_sync_overflows"] >= 1
    # memory after each round (all sessions cleared) does not grow with the churn (36,000 sessions
    # made and removed: a queue of what the peer never read would hold ~10 blocks for each)
    assert blocks[2] < blocks[0] + 20_000, blocks
    assert node.sync.pending() <= ha_node.CHANGED_MAX + 600
