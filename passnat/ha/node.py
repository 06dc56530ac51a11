"""One passnat of an active/standby pair: its role, its two sync connections (docs/ha.md).

Roles:
  * ``master`` forwards, answers ARP for the router's addresses, announces
    them with gratuitous ARP when it takes over (three times, a second apart)
    and sends every state change to the peer;
  * ``backup`` reads its rings but forwards nothing (``Daemon.forwarding``
    False: the receive loop drops every IPv4 frame), answers no ARP for the
    shared addresses, and applies what the master sends.
A daemon with ``ha sync`` starts as backup, unless the last role keepalived
asked for (``passnat ha master|backup`` writes it to ``ha-role`` next to the
control socket, also when the daemon is down) was master.  keepalived's
notify scripts switch the role with ``passnat ha master|backup``
(``Daemon.dispatch`` -> ``control``).

Connections (TCP, non-blocking, in the daemon's poll loop): each router
connects to the other's listener and *sends* on that connection (the bulk
after a handshake when it is master, then its changes, batched every
``FLUSH`` s, and a heartbeat every second); what it *receives* comes on the
connection the peer opened to it, which it answers with heartbeats only.
The listener accepts only the configured peer address; one connection per
direction (a newer one replaces the older).  A connection silent for
``DEAD`` s is closed; the client reconnects every ``RETRY`` s.  Frames and
authentication: wire.py; records and their application: sync.py.

Never blocking the packet path: sockets are non-blocking; the sender
serialises only while its output buffer is below ``OUT_HIGH`` and otherwise
lets changes coalesce in the engine's change sets; when those grow past
``CHANGED_MAX`` (a peer that stopped reading) they are dropped, recording
stops, and a full transfer replaces them once the peer reads again: the
memory a slow peer can cost is bounded by the buffer and the session table.
"""
from __future__ import annotations

import errno
import json
import logging
import os
import socket
import time
from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from passnat.ha import wire
from passnat.ha.sync import FIELDS, SyncError, SyncState
from passnat.io.reactor import POLLERR, POLLIN, POLLOUT

if TYPE_CHECKING:
    from passnat.config.model import Config, HaSync
    from passnat.io.daemon import Daemon

log = logging.getLogger("passnat.ha")

FLUSH = 0.05  # batching delay of changes (issue 12: <= 50 ms)
HEARTBEAT = 1.0
DEAD = 3.5
RETRY = 1.0
OUT_HIGH = 256 << 10  # serialise more only below this many bytes waiting for the socket
CHANGED_MAX = 200_000  # changes waiting in the engine's sets before they give way to a full transfer
GARP_REPEAT = (0.0, 1.0, 2.0)
ROLES = ("master", "backup")


def role_file(control_path: str) -> str:
    """Where ``passnat ha master|backup`` records the role keepalived last asked for."""
    return os.path.join(os.path.dirname(os.path.abspath(control_path)), "ha-role")


def read_role(control_path: str) -> str:
    try:
        with open(role_file(control_path)) as f:
            role = f.read().strip()
    except OSError:
        return "backup"
    return role if role in ROLES else "backup"


def write_role(control_path: str, role: str) -> None:
    path = role_file(control_path)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(role + "\n")
    os.replace(tmp, path)


class Conn:
    """One sync connection (``side`` "client": we connected and send; "server": we accepted)."""

    def __init__(self, node: HaNode, sock: socket.socket, side: str, now: float):
        self.node = node
        self.sock = sock
        self.side = side
        key = node.key
        mine, theirs = (b"C", b"S") if side == "client" else (b"S", b"C")
        self.enc = wire.Encoder(key, mine)
        self.dec = wire.Decoder(key, theirs)
        self.out = bytearray()
        self.state = "connecting" if side == "client" else "handshake"
        self.nonce = wire.nonce()
        self.since = now
        self.last_rx = now
        self.last_tx = now
        self.closed = False
        self.bulk: Iterator[dict[str, Any]] | None = None
        self.bulk_sent = 0
        self.bulk_started = 0.0
        self.peer: dict[str, Any] = {}
        self.rx_messages = 0
        self.events = POLLIN

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, mtype: int, obj: Any, now: float) -> None:
        self.out += self.enc.message(mtype, obj)
        self.last_tx = now
        self.flush()

    def flush(self) -> None:
        while self.out and not self.closed:
            try:
                n = self.sock.send(self.out)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:
                self.node.drop(self, f"send failed: {e.strerror or e}")
                return
            del self.out[:n]
        self._watch(POLLIN | (POLLOUT if self.out or self.state == "connecting" else 0))

    def _watch(self, events: int) -> None:
        if events != self.events and not self.closed:
            self.events = events
            self.node.reactor.modify(self.sock.fileno(), events)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.node.reactor.unwatch(self.sock.fileno())
        self.sock.close()


class HaNode:
    def __init__(self, daemon: Daemon):
        self.daemon = daemon
        self.reactor = daemon.reactor
        self.cfg: HaSync = daemon.config.ha
        assert self.cfg.key is not None
        self.key = self.cfg.key.encode()
        self.counters: Counter[str] = daemon.counters
        self.sync = SyncState(daemon.router, daemon.counters)
        self.control_path = daemon.options.control_path
        self.role = read_role(self.control_path)
        self.listener: socket.socket | None = None
        self.client: Conn | None = None
        self.server: Conn | None = None
        #: accepted connections that have not authenticated yet (they replace ``server`` once they do)
        self.pending: list[Conn] = []
        self.next_connect = 0.0
        self.next_flush = 0.0
        self.garp_at: list[float] = []
        self.need_bulk = False
        self.role_since = time.monotonic()
        self.last_bulk: dict[str, Any] = {}
        self._apply_role(initial=True)

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Open the listener (a failure refuses the start like any other)."""
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if self.cfg.interface:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, self.cfg.interface.encode())
            s.bind((str(self.cfg.local) if self.cfg.local else "0.0.0.0", self.cfg.port))
            s.listen(4)
            s.setblocking(False)
        except OSError as e:
            s.close()
            raise OSError(e.errno, f"ha sync: cannot listen on {self.cfg.local or '0.0.0.0'}:{self.cfg.port}"
                                   f"{' on ' + self.cfg.interface if self.cfg.interface else ''}: "
                                   f"{e.strerror or e}") from None
        self.listener = s
        self.reactor.watch(s.fileno(), POLLIN, self._on_accept)
        log.info("ha: %s; sync with %s port %d%s (listening)", self.role, self.cfg.peer, self.cfg.port,
                 f" over {self.cfg.interface}" if self.cfg.interface else "")

    def close(self) -> None:
        """Clean stop: what is noted goes out first (best effort, non-blocking), then close."""
        c = self.client
        if c is not None and c.ready and self.role == "master" and c.bulk is None:
            self._send_changes(c, time.monotonic(), force=True)
        for conn in (self.client, self.server, *self.pending):
            if conn is not None:
                conn.close()
        self.client = self.server = None
        self.pending = []
        if self.listener is not None:
            self.reactor.unwatch(self.listener.fileno())
            self.listener.close()
            self.listener = None

    def reconfigure(self, config: Config) -> None:
        """SIGHUP: a changed ``ha sync`` reconnects with it (a removed one keeps the old one)."""
        if not config.ha.enabled or config.ha == self.cfg:
            return
        old = self.cfg
        self.cfg = config.ha
        assert self.cfg.key is not None
        self.key = self.cfg.key.encode()
        for conn in (self.client, self.server):
            if conn is not None:
                self.drop(conn, "configuration changed")
        if (old.local, old.port, old.interface) != (self.cfg.local, self.cfg.port, self.cfg.interface):
            if self.listener is not None:
                self.reactor.unwatch(self.listener.fileno())
                self.listener.close()
                self.listener = None
            self.start()

    # ------------------------------------------------------------ roles

    def _apply_role(self, initial: bool = False) -> None:
        d = self.daemon
        d.forwarding = self.role == "master"
        if self.role == "backup":
            self.sync.record(False)
            self.sync.rebuild_index()
        if not initial:
            d._update_addresses()  # ARP answers for the shared addresses: only as master

    def set_role(self, role: str) -> dict[str, Any]:
        if role not in ROLES:
            raise ValueError(f"role must be master or backup, not {role!r}")
        if role == self.role:
            return self.status()
        mono = time.monotonic()
        now = self.daemon.clock()
        if role == "backup":
            c = self.client
            if c is not None and c.ready and c.bulk is None:
                self._send_changes(c, mono, force=True)  # a planned switch loses nothing
            self.role = "backup"
            self._apply_role()
            if c is not None:
                c.bulk = None
            self.garp_at = []
            self.counters["ha_became_backup"] += 1
            log.warning("ha: now BACKUP: not forwarding, not answering ARP for %s",
                        ", ".join(sorted({a for s in self.daemon.router.owned_addresses().values() for a in s})))
        else:
            self.role = "master"
            self.sync.restart_timers(now)
            self._apply_role()
            self.garp_at = [mono + t for t in GARP_REPEAT]
            self.counters["ha_became_master"] += 1
            log.warning("ha: now MASTER: forwarding %d session(s); announcing the router's addresses",
                        len(self.daemon.router.table))
            c = self.client
            if c is not None and c.ready:
                self._start_bulk(c, mono)
        self.role_since = mono
        try:
            write_role(self.control_path, role)  # a restart after a crash resumes in this role
        except OSError as e:
            log.warning("ha: cannot record the role in %s: %s", role_file(self.control_path), e.strerror or e)
        return self.status()

    def _garp(self) -> None:
        for link in self.daemon.links.values():
            if link.neigh is None:
                continue
            for frame in link.neigh.announcements():
                if link.send(frame):
                    self.counters["gratuitous_arp_sent"] += 1

    # ------------------------------------------------------------ loop

    def tick(self, now: float, deadline: float | None) -> float | None:
        """Called every loop turn with the engine clock; returns the loop's next deadline."""
        mono = time.monotonic()
        if self.garp_at and mono >= self.garp_at[0]:
            self.garp_at.pop(0)
            self._garp()
        if self.client is None and mono >= self.next_connect:
            self._connect(mono)
        for conn in (self.client, self.server, *self.pending):
            if conn is None or conn.closed:
                continue
            if conn.state != "connecting" and mono - conn.last_rx > DEAD:
                self.drop(conn, f"peer silent for {DEAD:g} s")
                continue
            if conn.state == "connecting" and mono - conn.since > DEAD:
                self.drop(conn, "connect timed out")
                continue
            if conn.ready and mono - conn.last_tx >= HEARTBEAT:
                conn.send(wire.HEARTBEAT, self._heartbeat(conn), mono)
        c = self.client
        if c is not None and c.ready and self.role == "master":
            if c.bulk is not None:
                self._pump_bulk(c, mono)
            elif self.need_bulk:
                if len(c.out) < OUT_HIGH // 2:
                    self._start_bulk(c, mono)
            elif mono >= self.next_flush:
                self._send_changes(c, mono)
            if self.sync.pending() > CHANGED_MAX:
                self._overflow()
        wake = mono + HEARTBEAT / 2
        if self.role == "master" and c is not None and c.ready:
            wake = min(wake, self.next_flush)
        if self.garp_at:
            wake = min(wake, self.garp_at[0])
        if self.client is None:
            wake = min(wake, self.next_connect)
        at = now + max(0.0, wake - mono)
        return at if deadline is None else min(deadline, at)

    def _heartbeat(self, conn: Conn) -> dict[str, Any]:
        return {"now": self.daemon.clock(), "role": self.role, "applied": self.sync.applied_total,
                "sessions": len(self.daemon.router.table)}

    # ------------------------------------------------------------ sending

    def _send_changes(self, c: Conn, mono: float, force: bool = False) -> None:
        self.next_flush = mono + FLUSH
        if not self.sync.pending() or (len(c.out) >= OUT_HIGH and not force):
            return
        now = self.daemon.clock()
        while force or len(c.out) < OUT_HIGH:
            msg = self.sync.take(now)
            if msg is None or c.closed:
                break
            c.send(wire.UPDATE, msg, mono)
            self.counters["ha_sync_updates_sent"] += 1
            self.counters["ha_sync_records_sent"] += len(msg["s"]) + len(msg["r"])

    def _start_bulk(self, c: Conn, mono: float) -> None:
        """A full transfer: the table as it is now, serialised as the socket takes it; changes
        from now on are noted and follow it."""
        self.need_bulk = False
        self.sync.record(True)
        self.sync.discard()  # everything noted so far is in the transfer
        sessions = self.sync.snapshot()
        now = self.daemon.clock()
        c.send(wire.BULK_BEGIN, {"now": now, "next_id": self.daemon.router.table.next_id_value(),
                                 "sessions": len(sessions)}, mono)
        c.bulk = self.sync.bulk_messages(sessions, now)
        c.bulk_sent = 0
        c.bulk_started = mono
        self.counters["ha_sync_bulk_started"] += 1
        log.info("ha: full transfer of %d session(s) to %s started", len(sessions), self.cfg.peer)
        self._pump_bulk(c, mono)

    def _pump_bulk(self, c: Conn, mono: float) -> None:
        assert c.bulk is not None
        while len(c.out) < OUT_HIGH:
            msg = next(c.bulk, None)
            if msg is None:
                c.send(wire.BULK_END, {"now": self.daemon.clock()}, mono)
                c.bulk = None
                took = mono - c.bulk_started
                self.last_bulk = {"sessions": c.bulk_sent, "seconds": round(took, 3), "at": time.time()}
                self.counters["ha_sync_bulk_done"] += 1
                log.info("ha: full transfer of %d session(s) done in %.2f s", c.bulk_sent, took)
                self._send_changes(c, mono)
                return
            c.send(wire.UPDATE, msg, mono)
            c.bulk_sent += len(msg["s"])

    def _overflow(self) -> None:
        """The peer reads too slowly: forget the noted changes, send everything again later."""
        self.sync.record(False)
        self.need_bulk = True
        self.counters["ha_sync_overflows"] += 1
        log.warning("ha: the peer %s reads too slowly: %d change(s) waiting; they are dropped and a full "
                    "transfer follows once it catches up", self.cfg.peer, CHANGED_MAX)

    # ------------------------------------------------------------ connections

    def _connect(self, mono: float) -> None:
        self.next_connect = mono + RETRY
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.setblocking(False)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.cfg.interface:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, self.cfg.interface.encode())
            if self.cfg.local:
                s.bind((str(self.cfg.local), 0))
            err = s.connect_ex((str(self.cfg.peer), self.cfg.port))
        except OSError as e:
            s.close()
            self._note_down(f"cannot connect: {e.strerror or e}")
            return
        if err not in (0, errno.EINPROGRESS):
            s.close()
            self._note_down(f"cannot connect: {os.strerror(err)}")
            return
        c = Conn(self, s, "client", mono)
        self.client = c
        self.reactor.watch(s.fileno(), POLLIN | POLLOUT, lambda ev: self._on_event(c, ev))
        c.events = POLLIN | POLLOUT

    def _note_down(self, why: str) -> None:
        self.counters["ha_sync_connect_failed"] += 1
        self.daemon.router.log_event("ha-connect", time.monotonic(), f"ha: peer {self.cfg.peer}: {why}",
                                     logging.INFO)

    def _on_accept(self, _revents: int) -> None:
        assert self.listener is not None
        try:
            s, addr = self.listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            log.warning("ha: accept failed: %s", e.strerror or e)
            return
        if addr[0] != str(self.cfg.peer):
            s.close()
            self.counters["ha_sync_refused_address"] += 1
            self.daemon.router.log_event("ha-refused", time.monotonic(),
                                         f"ha: refused a sync connection from {addr[0]} (the peer is {self.cfg.peer})")
            return
        s.setblocking(False)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        mono = time.monotonic()
        if len(self.pending) >= 4:  # the oldest unauthenticated one gives way
            self.drop(self.pending[0], "too many connections waiting to authenticate")
        c = Conn(self, s, "server", mono)
        self.pending.append(c)
        self.reactor.watch(s.fileno(), POLLIN, lambda ev: self._on_event(c, ev))
        c.out += c.enc.frame(wire.CHALLENGE, c.nonce)  # the server's nonce, raw
        c.flush()

    def drop(self, c: Conn, why: str) -> None:
        if c.closed:
            return
        was_ready = c.ready
        c.close()
        if c is self.client:
            self.client = None
            self.next_connect = time.monotonic() + RETRY
        if c in self.pending:
            self.pending.remove(c)
        if c is self.server:
            self.server = None
            self.sync.abort_bulk()
        if was_ready:
            self.counters["ha_sync_disconnects"] += 1
            log.warning("ha: sync connection %s %s closed: %s", "to" if c.side == "client" else "from",
                        self.cfg.peer, why)
        if c.side == "client" and self.role == "master":
            self.sync.record(False)  # nobody to send to: a full transfer follows the reconnection

    def _on_event(self, c: Conn, revents: int) -> None:
        if c.closed:
            return
        mono = time.monotonic()
        if c.state == "connecting":
            if revents & (POLLOUT | POLLERR):
                err = c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    self.drop(c, os.strerror(err))
                    self._note_down(f"cannot connect: {os.strerror(err)}")
                    return
                c.state = "handshake"
                c.last_rx = mono
                c.flush()
            return
        if revents & POLLOUT:
            c.flush()
            if c.closed:
                return
        if revents & (POLLIN | POLLERR):
            self._read(c, mono)

    def _read(self, c: Conn, mono: float) -> None:
        try:
            data = c.sock.recv(1 << 18)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            self.drop(c, f"receive failed: {e.strerror or e}")
            return
        if not data:
            try:
                c.dec.close()
            except wire.WireError as e:
                self._bad(c, e)
                return
            self.drop(c, "the peer closed it")
            return
        c.last_rx = mono
        try:
            frames = c.dec.feed(data)
            while frames:
                for mtype, payload in frames:
                    self._frame(c, mtype, payload, mono)
                    if c.closed:
                        return
                frames = c.dec.feed(b"")
        except wire.WireError as e:
            self._bad(c, e)

    def _bad(self, c: Conn, e: wire.WireError) -> None:
        self.counters[f"ha_sync_{e.reason}"] += 1
        log.warning("ha: a frame from %s was refused (counted as ha_sync_%s): %s; closing the connection",
                    self.cfg.peer, e.reason, e)
        self.drop(c, f"bad frame ({e.reason})")

    def _frame(self, c: Conn, mtype: int, payload: bytes, mono: float) -> None:
        c.rx_messages += 1
        if c.state == "handshake":
            self._handshake(c, mtype, payload, mono)
            return
        if mtype == wire.HEARTBEAT:
            try:
                c.peer.update(wire.decode_json(payload))
            except wire.WireError:
                self.counters["ha_sync_malformed"] += 1
            if c.side == "server" and c.peer.get("role") == "backup":
                self.sync.abort_bulk()  # a transfer the peer gave up when it stepped down: no sweep
            return
        if c.side != "server" or mtype not in (wire.BULK_BEGIN, wire.UPDATE, wire.BULK_END):
            raise wire.WireError("malformed", f"unexpected {wire.NAMES.get(mtype, mtype)} message")
        kind = wire.NAMES[mtype]
        obj = wire.decode_json(payload)
        now = self.daemon.clock()
        try:
            n = self.sync.apply(kind, obj, now)
        except SyncError as e:
            self.counters["ha_sync_malformed"] += 1
            self.daemon.router.log_event("ha-malformed", mono,
                                         f"ha: a {kind} message from {self.cfg.peer} was refused (not "
                                         f"applied; counted as ha_sync_malformed): {e}")
            return
        except Exception:  # noqa: BLE001 -- a bug must not stop the router; counted and logged
            self.counters["ha_sync_internal_error"] += 1
            log.exception("ha: applying a %s message failed (counted as ha_sync_internal_error)", kind)
            return
        self.counters["ha_sync_updates_applied"] += 1
        if kind == "bulk_end":
            self.last_bulk = {"received": True, "removed": n, "at": time.time(),
                              "sessions": len(self.daemon.router.table)}
            log.info("ha: full transfer from %s received: %d session(s) now, %d stale removed", self.cfg.peer,
                     len(self.daemon.router.table), n)

    def _handshake(self, c: Conn, mtype: int, payload: bytes, mono: float) -> None:
        if c.side == "client":
            if mtype != wire.CHALLENGE or len(payload) != wire.NONCE_LEN:
                raise wire.WireError("malformed", "the peer did not start with a challenge")
            hello = {"version": wire.VERSION, "fields": list(FIELDS), "role": self.role,
                     "nonce": c.nonce.hex(), "node": socket.gethostname()}
            c.send(wire.HELLO, hello, mono)
            k = wire.connection_key(self.key, payload, c.nonce)
        else:
            if mtype != wire.HELLO:
                raise wire.WireError("malformed", "the peer did not answer with hello")
            hello = wire.decode_json(payload)
            if hello.get("version") != wire.VERSION or hello.get("fields") != list(FIELDS):
                self.counters["ha_sync_incompatible"] += 1
                self.drop(c, f"the peer runs an incompatible passnat (protocol {hello.get('version')!r})")
                return
            try:
                client_nonce = bytes.fromhex(str(hello.get("nonce")))
            except ValueError:
                raise wire.WireError("malformed", "hello without a nonce") from None
            if len(client_nonce) != wire.NONCE_LEN:
                raise wire.WireError("malformed", "hello without a nonce")
            c.peer.update(hello)
            k = wire.connection_key(self.key, c.nonce, client_nonce)
            if c in self.pending:
                self.pending.remove(c)
            if self.server is not None:
                self.drop(self.server, "replaced by a new connection from the peer")
            self.server = c
        c.enc.rekey(k)
        c.dec.rekey(k)
        c.state = "ready"
        self.counters["ha_sync_connections"] += 1
        log.info("ha: sync connection %s %s up", "to" if c.side == "client" else "from", self.cfg.peer)
        if c.side == "client" and self.role == "master":
            self._start_bulk(c, mono)

    # ------------------------------------------------------------ control

    def control(self, req: dict[str, Any]) -> Any:
        op = req["op"]
        if op == "ha_role":
            role = req.get("role")
            if role not in ROLES:
                from passnat.control.protocol import ProtocolError

                raise ProtocolError(f"ha role must be master or backup, not {role!r}")
            return self.set_role(str(role))
        return self.status()

    def status(self) -> dict[str, Any]:
        mono = time.monotonic()

        def conn(c: Conn | None) -> dict[str, Any] | None:
            if c is None:
                return None
            return {"state": c.state, "since_s": round(mono - c.since, 1), "waiting_bytes": len(c.out),
                    "last_heard_s": round(mono - c.last_rx, 1), "messages_in": c.rx_messages,
                    "bulk_in_progress": c.bulk is not None,
                    "peer_role": c.peer.get("role"), "peer_sessions": c.peer.get("sessions")}

        counters = {k: v for k, v in sorted(self.counters.items()) if k.startswith("ha_")}
        return {"role": self.role, "role_since_s": round(mono - self.role_since, 1),
                "forwarding": self.daemon.forwarding, "peer": str(self.cfg.peer), "port": self.cfg.port,
                "local": str(self.cfg.local) if self.cfg.local else None, "interface": self.cfg.interface,
                "sessions": len(self.daemon.router.table), "pending_changes": self.sync.pending(),
                "recording": self.sync.recording, "sending": conn(self.client), "receiving": conn(self.server),
                "last_bulk": self.last_bulk, "counters": counters}


def attach(daemon: Daemon) -> HaNode | None:
    """The daemon's HA node when its configuration has ``ha sync`` (else None)."""
    if not daemon.config.ha.enabled:
        return None
    return HaNode(daemon)


def status_text(st: dict[str, Any]) -> str:
    """``passnat ha status`` as text."""
    lines = [f"role: {st['role']} (for {st['role_since_s']} s), "
             f"{'forwarding' if st['forwarding'] else 'not forwarding'}; {st['sessions']} session(s)",
             f"sync peer: {st['peer']} port {st['port']}"
             + (f" from {st['local']}" if st.get("local") else "")
             + (f" over {st['interface']}" if st.get("interface") else "")]
    for name in ("sending", "receiving"):
        c = st.get(name)
        if c is None:
            lines.append(f"  {name}: not connected")
        else:
            lines.append(f"  {name}: {c['state']} for {c['since_s']} s, last heard {c['last_heard_s']} s ago, "
                         f"{c['messages_in']} message(s) in, {c['waiting_bytes']} byte(s) waiting"
                         + (", full transfer in progress" if c["bulk_in_progress"] else "")
                         + (f"; peer is {c['peer_role']} with {c['peer_sessions']} session(s)"
                            if c.get("peer_role") else ""))
    lines.append(f"changes waiting: {st['pending_changes']}" + ("" if st["recording"] else " (not recording)"))
    if st.get("last_bulk"):
        lines.append(f"last full transfer: {json.dumps(st['last_bulk'])}")
    for k, v in st["counters"].items():
        lines.append(f"  {k:32} {v}")
    return "\n".join(lines) + "\n"
