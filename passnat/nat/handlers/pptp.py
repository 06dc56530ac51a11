"""PPTP passthrough (R12, R13): the control-connection ALG and enhanced GRE by Call ID.

The control connection (TCP, server port 1723) is NAPTed like any TCP session
by ``PptpHandler`` (a ``TcpUdpHandler``) and every segment is also parsed as a
byte stream of PPTP control messages (``Stream``): messages split over
segments and several messages in one segment are handled; message lengths
never change, so TCP sequence numbers stay right and only the checksum is
recomputed.

Rule: the *inside* party's Call IDs are translated, whoever it is (a PNS
client behind the router, or a PAC server published with SNAPT TCP 1723):
  * in messages from inside, the fields carrying the sender's own Call ID
    (OCRQ, OCRP, ICRQ, ICRP, CCRQ, CDN) get an outside Call ID unique per
    (global address, server), allocated when the call opens (the inside ID is
    kept when free);
  * in messages from outside, the fields carrying the receiver's Call ID
    (OCRP, ICRP "Peer's Call ID"; ICCN, WEN, SLI) are translated back;
  * a CDN from outside carries, per RFC 2637 §2.13, the server's own Call ID
    and passes unchanged -- but some servers put the client's Call ID there:
    when the value is not the server's ID of any call of this connection and
    is one of our outside IDs, it is translated back.
Calls end with Call-Clear-Request (GRE stops at once; the call lingers
``CLEAR_LINGER`` s for the CDN), Call-Disconnect-Notify, a failed
Outgoing-Call-Reply, Stop-Control-Connection, or the control connection's
end (FIN both ways, RST, expiry, clear).

``PptpGreHandler`` translates enhanced GRE (version 1): inbound by
(global address, server, Call ID) like a port, with the Call ID put back to
the inside host's; outbound by (global address, server, server's Call ID),
source address only.  Each call has a GRE session (listed, limited, timed by
``nat timeout protocol gre``) that lives as long as its call.

A segment that ends inside a Call ID field is held until the next one
arrives (the field cannot be translated half-known); a segment beyond a gap
is dropped (``pptp_out_of_order_segment``), the sender retransmits.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from passnat.nat.drops import Drop
from passnat.nat.handlers.base import HELD, Fwd, Pkt, Priority, Verdict
from passnat.nat.handlers.common import admit, make_session
from passnat.nat.handlers.other import AddressOnlyHandler
from passnat.nat.handlers.tcpudp import TcpUdpHandler
from passnat.nat.icmp_errors import Quoted, rewrite_address
from passnat.nat.ports import IdPool
from passnat.nat.session import Session
from passnat.nat.static import SnaptTarget
from passnat.nat.tcp_track import TcpState
from passnat.packet import pptp as P
from passnat.packet.ipv4 import PROTO_GRE, PROTO_TCP
from passnat.packet.tcp import RST, SYN, set_checksum

if TYPE_CHECKING:
    from passnat.nat.actions import Output
    from passnat.nat.router import Router

CLEAR_LINGER = 10.0  # a cleared call waits this long for its Call-Disconnect-Notify
SEGMENT_HOLD = 5.0  # a held segment is dropped after this (the sender retransmits)
REWRITE_MEMORY = 512  # rewritten stream bytes remembered per direction (retransmissions)
MAX_MESSAGE = 4096
REBASE_AT = 1 << 30  # stream positions are re-based past this many bytes
HEAD = 20  # bytes of each message kept: the header, the Call ID fields, OCRP's result code

_U16 = struct.Struct("!H")


@dataclass(eq=False)
class Call:
    ctrl: Session  # the control connection
    host: int  # inside party's address
    inside_id: int
    outside_id: int
    peer_id: int | None = None  # the outside party's Call ID
    state: str = "opening"  # opening | established | clearing
    gre: Session | None = None
    since: float = 0.0

    def plain(self) -> list[Any]:
        return [self.inside_id, self.outside_id, self.peer_id, self.state]


@dataclass(eq=False)
class Stream:
    """One direction of a control connection as a byte stream of messages."""

    base: int | None = None  # TCP sequence number of stream position 0
    next: int = 0  # next stream position expected
    msg_start: int = 0
    msg_len: int | None = None
    head: bytearray = field(default_factory=bytearray)  # first 16 bytes of the current message
    decided: bool = False
    desync: bool = False
    rewrites: dict[int, int] = field(default_factory=dict)  # stream position -> new byte
    pending_from: int | None = None  # start of a Call ID field not yet decidable
    held: list[tuple[str, bytes, float]] = field(default_factory=list)


class PptpHandler(TcpUdpHandler):
    name = "pptp"
    protocols: tuple[int, ...] = (PROTO_TCP,)
    priority = Priority.ALG

    def __init__(self) -> None:
        self.streams: dict[int, tuple[Stream, Stream]] = {}  # control session id -> (from inside, from outside)
        self.calls: dict[int, list[Call]] = {}  # control session id -> calls
        self.gre_in: dict[tuple[int, int, int], Call] = {}  # (global, remote, outside id)
        self.gre_out: dict[tuple[int, int, int], Call] = {}  # (global, remote, remote's id)
        # every live call that holds a gre_out key, oldest first: a server that gives two calls
        # from one global address the same Call ID (one it believes ended) hands the key to the
        # newer call, and back to the older when the newer ends (_peer_on / _peer_off)
        self.peer_calls: dict[tuple[int, int, int], list[Call]] = {}
        self.pools: dict[tuple[int, int], IdPool] = {}  # (global, remote) -> Call IDs
        self.lingering: list[tuple[float, Call]] = []

    def matches(self, pkt: Pkt, outbound: bool) -> bool:
        return pkt.sport == P.PPTP_PORT or pkt.dport == P.PPTP_PORT

    def slow_path(self, s: Session) -> bool:
        return True  # every control segment is parsed

    @staticmethod
    def awaits(pkt: Pkt, kind: str, in_port: int, rem_port: int) -> int:
        return 0  # a VPN's control connection: never evicted (table.py make_room)

    # ------------------------------------------------------------ TCP glue

    def track(self, s: Session, pkt: Pkt, outbound: bool) -> None:
        super().track(s, pkt, outbound)
        if s.tcp_state == TcpState.CLOSED:
            self.end_all(s, pkt.now)

    def translate(self, pkt: Pkt, s: Session, outbound: bool) -> Fwd:
        fwd = super().translate(pkt, s, outbound)
        verdict, released = self._alg(pkt, s, from_inside=outbound)
        if verdict is not None:
            raise _Stop(verdict)  # the TCP code paths return whatever translate() gives
        fwd.extra.extend(released)
        return fwd

    def outbound(self, pkt: Pkt, nat_if: str, nh: str, create: bool) -> Verdict:
        try:
            return super().outbound(pkt, nat_if, nh, create)
        except _Stop as stop:
            return stop.verdict

    def inbound(self, pkt: Pkt) -> Verdict:
        try:
            return super().inbound(pkt)
        except _Stop as stop:
            return stop.verdict

    def snapt_inbound(self, pkt: Pkt, target: SnaptTarget) -> Verdict:
        try:
            return super().snapt_inbound(pkt, target)
        except _Stop as stop:
            return stop.verdict

    # ------------------------------------------------------------ stream

    def _alg(self, pkt: Pkt, s: Session, *, from_inside: bool) -> tuple[Verdict, list[Output]]:
        """Parse and rewrite the segment's PPTP bytes.

        Returns a verdict that stops the packet (drop, held) or None, and the
        held segments this one releases (sent after it).
        """
        buf, ihl = pkt.buf, pkt.ip.ihl
        if len(buf) < ihl + 20:
            return None, []
        seq = struct.unpack_from("!I", buf, ihl + 4)[0]
        doff = (buf[ihl + 12] >> 4) * 4
        start, end = ihl + doff, len(buf)
        streams = self.streams.get(s.id)
        if streams is None:
            streams = self.streams[s.id] = (Stream(), Stream())
        st = streams[0] if from_inside else streams[1]
        if pkt.flags & SYN:
            st.base = (seq + 1) & 0xFFFFFFFF
            st.next = 0
            return None, []
        n = end - start
        if n <= 0 or st.desync or pkt.flags & RST:
            return None, []
        if st.base is None:  # picked up mid-stream: assume a message starts here
            st.base = seq
        rel = ((seq - st.base + 0x80000000) & 0xFFFFFFFF) - 0x80000000  # signed distance
        if rel > st.next:
            return Drop.PPTP_OUT_OF_ORDER, []
        old_len = min(n, st.next - rel)
        if st.pending_from is not None and old_len > 0 and rel + old_len > st.pending_from:
            return HELD, []  # a retransmission of a segment we are holding
        if old_len < n:
            self._feed(st, s, pkt, bytes(buf[start + old_len:end]), rel + old_len, from_inside)
        changed = False
        for pos in range(rel, rel + n):
            new = st.rewrites.get(pos)
            if new is not None and buf[start + pos - rel] != new:
                buf[start + pos - rel] = new
                changed = True
        if changed:
            set_checksum(buf, ihl)
        if st.pending_from is not None:
            st.held.append((pkt.ingress, pkt.orig, pkt.now))
            self.router.count("pptp_segments_held")
            self.router.wake(pkt.now + SEGMENT_HOLD)
            return HELD, []
        released: list[Output] = []
        if st.held:
            held, st.held = st.held, []
            for iface, data, _ in held:
                released.extend(self.router.reinject(iface, data, pkt.now))
        return None, released

    def _feed(self, st: Stream, s: Session, pkt: Pkt, data: bytes, pos: int, from_inside: bool) -> None:
        i, n = 0, len(data)
        while i < n:
            off = pos + i - st.msg_start
            if st.msg_len is not None and off >= st.msg_len:
                st.msg_start, st.msg_len, st.decided = pos + i, None, False
                st.head = bytearray()
                continue
            if len(st.head) < HEAD and off == len(st.head):
                limit = 2 if st.msg_len is None else min(HEAD, st.msg_len)  # the length first
                take = min(limit - len(st.head), n - i)
                st.head += data[i:i + take]
                i += take
                if st.msg_len is None and len(st.head) >= 2:
                    st.msg_len = _U16.unpack_from(st.head, 0)[0]
                    if st.msg_len < P.HEADER_LEN or st.msg_len > MAX_MESSAGE:
                        self._desync(st, pkt)
                        return
                if len(st.head) >= 8 and _U16.unpack_from(st.head, 2)[0] == P.CONTROL_MESSAGE \
                        and struct.unpack_from("!I", st.head, 4)[0] != P.MAGIC:
                    self._desync(st, pkt)
                    return
                self._maybe_decide(st, s, pkt, from_inside)
                continue
            if st.msg_len is None:  # cannot happen for a contiguous stream; never guess
                self._desync(st, pkt)
                return
            i += min(st.msg_len - off, n - i)
        st.next = pos + n
        if st.next > REBASE_AT:
            self._rebase(st)

    @staticmethod
    def _rebase(st: Stream) -> None:
        """Move position 0 forward so positions stay well inside the signed 32-bit window."""
        assert st.base is not None
        shift = st.msg_start
        st.base = (st.base + shift) & 0xFFFFFFFF
        st.next -= shift
        st.msg_start = 0
        if st.pending_from is not None:
            st.pending_from -= shift
        st.rewrites = {k - shift: v for k, v in st.rewrites.items() if k >= shift}

    def _desync(self, st: Stream, pkt: Pkt) -> None:
        st.desync = True
        st.pending_from = None
        self.router.count(Drop.PPTP_MALFORMED)
        self.router.log_event("pptp-desync", pkt.now,
                              "PPTP: malformed control stream; Call IDs of this connection are no longer translated")

    def _maybe_decide(self, st: Stream, s: Session, pkt: Pkt, from_inside: bool) -> None:
        if st.decided or len(st.head) < 10 or st.msg_len is None:
            return
        mtype = _U16.unpack_from(st.head, 8)[0]
        fields = P.CALL_ID_FIELDS.get(mtype)
        if fields is None:
            st.decided = True
            if mtype in (P.STOPCCRQ, P.STOPCCRP) and len(st.head) >= 10:
                self.end_all(s, pkt.now)
            return
        need = max(off for off, _ in fields) + 2
        if mtype == P.OCRP:
            need = P.OCRP_RESULT + 1  # whether the call connected decides whether it lives
        if st.msg_len < need:
            st.decided = True
            self.router.count(Drop.PPTP_MALFORMED)
            return
        if len(st.head) < need:
            st.pending_from = st.msg_start + 12 if len(st.head) > 12 else None
            return
        st.decided = True
        st.pending_from = None
        head = bytes(st.head)
        for off, new in self._decide(s, mtype, head, from_inside, pkt.now):
            value = _U16.pack(new)
            st.rewrites[st.msg_start + off] = value[0]
            st.rewrites[st.msg_start + off + 1] = value[1]
        self.router.count(f"pptp_{P.NAMES.get(mtype, str(mtype)).lower().replace('-', '_')}")
        if len(st.rewrites) > REWRITE_MEMORY:
            for k in sorted(st.rewrites)[:len(st.rewrites) - REWRITE_MEMORY]:
                del st.rewrites[k]

    # ------------------------------------------------------------- calls

    def _decide(self, s: Session, mtype: int, head: bytes, from_inside: bool, now: float) -> list[tuple[int, int]]:
        """The (offset, new Call ID) rewrites for one message, updating the calls."""
        v12 = _U16.unpack_from(head, 12)[0]
        v14 = _U16.unpack_from(head, 14)[0] if len(head) >= 16 else None
        failed = mtype == P.OCRP and len(head) > P.OCRP_RESULT and head[P.OCRP_RESULT] != P.OCRP_CONNECTED
        if from_inside:
            if mtype in P.OPENING:
                call = self._call_by(s, inside=v12) or self._open(s, v12, now)
                if call is None:
                    return []
                if mtype in (P.OCRP, P.ICRP) and v14 is not None:
                    self._set_peer(call, v14, now)
                if failed:  # an inside server refused the call: it never carries GRE
                    self._end(call)
                return [(12, call.outside_id)]
            if mtype in (P.CCRQ, P.CDN):
                call = self._call_by(s, inside=v12)
                if call is None:
                    return []
                self._clear(call, now) if mtype == P.CCRQ else self._end(call)
                return [(12, call.outside_id)]
            return []  # ICCN, WEN, SLI from inside carry the outside party's ID
        if mtype in (P.OCRP, P.ICRP) and v14 is not None:
            call = self._call_by(s, outside=v14)
            if call is None:
                return []
            self._set_peer(call, v12, now)
            if failed:  # the server refused the call (busy, no carrier, ...): it ends here
                self._end(call)
            return [(14, call.inside_id)]
        if mtype in (P.ICCN, P.WEN, P.SLI):
            call = self._call_by(s, outside=v12)
            if call is None:
                return []
            if mtype == P.ICCN:
                self._established(call, now)
            return [(12, call.inside_id)]
        if mtype == P.CCRQ:
            call = self._call_by(s, peer=v12)
            if call is not None:
                self._clear(call, now)
            return []
        if mtype == P.CDN:
            call = self._call_by(s, peer=v12)
            if call is not None:
                self._end(call)
                return []
            call = self._call_by(s, outside=v12)
            if call is not None:  # a server that names the client's Call ID
                self.router.count("pptp_cdn_with_client_call_id")
                self._end(call)
                return [(12, call.inside_id)]
        return []

    def _call_by(self, s: Session, *, inside: int | None = None, outside: int | None = None,
                 peer: int | None = None) -> Call | None:
        for c in self.calls.get(s.id, ()):
            if inside is not None and c.inside_id == inside:
                return c
            if outside is not None and c.outside_id == outside:
                return c
            if peer is not None and c.peer_id == peer:
                return c
        return None

    def _pool(self, s: Session) -> IdPool:
        key = (s.out_addr, s.rem_addr)
        pool = self.pools.get(key)
        if pool is None:
            pool = self.pools[key] = IdPool()
        return pool

    def _open(self, s: Session, inside_id: int, now: float) -> Call | None:
        call = Call(ctrl=s, host=s.in_addr, inside_id=inside_id, outside_id=0, since=now)
        outside = self._pool(s).take(inside_id, 0, 65535, call)
        if outside is None:
            self.router.count(Drop.PPTP_NO_CALL_ID)
            return None
        call.outside_id = outside
        self.calls.setdefault(s.id, []).append(call)
        self.gre_in[(s.out_addr, s.rem_addr, outside)] = call
        self.router.count("pptp_calls_opened")
        self._sync(s)
        return call

    def _set_peer(self, call: Call, peer_id: int, now: float) -> None:
        self._peer_off(call)
        call.peer_id = peer_id
        self._peer_on(call)
        self._established(call, now)

    def _peer_on(self, call: Call) -> None:
        """Outbound GRE carrying the remote's Call ID of ``call`` goes to ``call`` (the newest wins)."""
        if call.peer_id is None:
            return
        key = (call.ctrl.out_addr, call.ctrl.rem_addr, call.peer_id)
        holders = self.peer_calls.setdefault(key, [])
        if call not in holders:
            holders.append(call)
        self.gre_out[key] = call

    def _peer_off(self, call: Call) -> None:
        """``call`` no longer takes outbound GRE; an older live call with the same key takes it back."""
        if call.peer_id is None:
            return
        key = (call.ctrl.out_addr, call.ctrl.rem_addr, call.peer_id)
        holders = self.peer_calls.get(key)
        if holders is not None and call in holders:
            holders.remove(call)
            if not holders:
                del self.peer_calls[key]
        if self.gre_out.get(key) is call:
            if holders:
                self.gre_out[key] = holders[-1]
            else:
                del self.gre_out[key]

    def _established(self, call: Call, now: float) -> None:
        if call.state == "opening":
            call.state = "established"
        self._sync(call.ctrl)

    def _clear(self, call: Call, now: float) -> None:
        """Call-Clear-Request: GRE stops now; the call waits for its CDN."""
        call.state = "clearing"
        self._drop_gre(call)
        self.lingering.append((now + CLEAR_LINGER, call))
        self.router.wake(now + CLEAR_LINGER)
        self._sync(call.ctrl)

    def _drop_gre(self, call: Call) -> None:
        s = call.ctrl
        if self.gre_in.get((s.out_addr, s.rem_addr, call.outside_id)) is call:
            del self.gre_in[(s.out_addr, s.rem_addr, call.outside_id)]
        self._peer_off(call)
        if call.gre is not None:
            gre, call.gre = call.gre, None
            self.router.table.remove(gre)

    def _end(self, call: Call) -> None:
        s = call.ctrl
        self._drop_gre(call)
        lst = self.calls.get(s.id)
        if lst is not None and call in lst:
            lst.remove(call)
            self._pool(s).release(call.outside_id, call)
            self.router.count("pptp_calls_ended")
        self._sync(s)

    def end_all(self, s: Session, now: float) -> None:
        for call in list(self.calls.get(s.id, ())):
            self._end(call)

    def _sync(self, s: Session) -> None:
        """Keep the session's plain-data view of its calls (listing, persistence)."""
        info = s.info if s.info is not None else {}
        info["pptp_calls"] = [c.plain() for c in self.calls.get(s.id, ())]
        s.info = info
        self.router.table.touched(s)

    def restore(self, s: Session) -> bool:
        """A saved control connection and its calls (GRE sessions follow, see persist), from a state
        file or the peer router (HA sync); each call takes its outside Call ID from whatever other
        control connection holds it here (``_make_way``: the record being restored is the newer)."""
        if not super().restore(s):
            return False
        for inside, outside, peer, state in (s.info or {}).get("pptp_calls", []):
            call = Call(ctrl=s, host=s.in_addr, inside_id=inside, outside_id=outside, state=state, since=s.last)
            self._make_way(s, outside)
            if not self._pool(s).claim(outside, call):
                continue
            self.calls.setdefault(s.id, []).append(call)
            call.peer_id = peer
            if state != "clearing":
                self.gre_in[(s.out_addr, s.rem_addr, outside)] = call
                self._peer_on(call)
            else:
                self.lingering.append((s.last + CLEAR_LINGER, call))
        self._sync(s)
        return True

    def update_info(self, s: Session, info: dict[str, Any] | None) -> None:
        """The peer router's newer calls of a control connection this router has (HA sync,
        passnat/ha): calls it no longer has end here, new ones open with the same Call IDs,
        changed ones take their new peer Call ID and state."""
        wanted = {c[1]: c for c in (info or {}).get("pptp_calls", [])}
        for old in list(self.calls.get(s.id, ())):
            if old.outside_id not in wanted:
                self._end(old)
        current = {c.outside_id: c for c in self.calls.get(s.id, ())}
        for outside, (inside, _o, peer, state) in wanted.items():
            found = current.get(outside)
            if found is not None:
                call = found
            else:
                call = Call(ctrl=s, host=s.in_addr, inside_id=inside, outside_id=outside, since=s.last)
                self._make_way(s, outside)
                if not self._pool(s).claim(outside, call):
                    self.router.count("ha_sync_conflicts")
                    continue
                self.calls.setdefault(s.id, []).append(call)
                self.gre_in[(s.out_addr, s.rem_addr, outside)] = call
            if peer != call.peer_id:
                self._peer_off(call)
                call.peer_id = peer
                if state != "clearing":
                    self._peer_on(call)
            if state == "clearing" and call.state != "clearing":
                call.state = "clearing"
                self._drop_gre(call)
                self.lingering.append((s.last + CLEAR_LINGER, call))
            elif state != "clearing":
                call.state = state
        self._sync(s)

    def _make_way(self, s: Session, outside: int) -> None:
        """End a call of another control connection that holds ``outside`` here: the peer's record
        is newer (the master hands an outside Call ID out again only once its old call ended, and
        that end may come in a later message)."""
        holder = self._pool(s).used.get(outside)
        if isinstance(holder, Call) and holder.ctrl is not s:
            self._end(holder)

    def on_remove(self, s: Session) -> None:
        self.end_all(s, s.last)
        self.calls.pop(s.id, None)
        self.streams.pop(s.id, None)

    # ------------------------------------------------------------- timers

    def next_deadline(self) -> float | None:
        times = [t for t, _ in self.lingering]
        for inside, outside in self.streams.values():
            for st in (inside, outside):
                if st.held:
                    times.append(st.held[0][2] + SEGMENT_HOLD)
        return min(times) if times else None

    def on_timer(self, now: float) -> list[Output]:
        keep = []
        for t, call in self.lingering:
            if t <= now:
                self._end(call)
            else:
                keep.append((t, call))
        self.lingering = keep
        for inside, outside in self.streams.values():
            for st in (inside, outside):
                if st.held and now - st.held[0][2] >= SEGMENT_HOLD:
                    self.router.count("pptp_held_segments_expired", len(st.held))
                    st.held = []
        return []

    def describe(self, s: Session) -> dict[str, Any]:
        role = "client inside" if s.rem_port == P.PPTP_PORT else "server inside"
        return {"pptp": {"role": role, "calls": [
            {"inside_call_id": c.inside_id, "outside_call_id": c.outside_id, "peer_call_id": c.peer_id,
             "state": c.state, "gre_session": c.gre.id if c.gre is not None else None}
            for c in self.calls.get(s.id, ())]}}

    # --------------------------------------------------------- GRE side

    def gre_session(self, call: Call, pkt: Pkt) -> Session | Drop:
        if call.gre is not None and call.gre.alive:
            return call.gre
        reason = admit(self.router, pkt, call.host)
        if reason is not None:
            return reason
        s = call.ctrl
        gre = make_session(self.router, pkt, kind=s.kind, nat_if=s.nat_if, in_addr=call.host,
                           in_port=call.inside_id, out_addr=s.out_addr, out_port=call.outside_id,
                           rem_addr=s.rem_addr, rem_port=call.peer_id or 0, klass="gre",
                           handler="pptp-gre")
        gre.info = {"call": [call.inside_id, call.outside_id, call.peer_id, s.id]}
        call.gre = gre
        return gre


class _Stop(Exception):
    """Carries the ALG's verdict out of the shared TCP code path."""

    def __init__(self, verdict: Verdict):
        super().__init__()
        self.verdict = verdict


class PptpGreHandler:
    """Enhanced GRE (PPTP data) by Call ID; other GRE goes to the address-only handler."""

    name = "pptp-gre"
    protocols = (PROTO_GRE,)
    priority = Priority.TUNNEL

    pptp: PptpHandler
    other: AddressOnlyHandler | None

    def bind(self, router: Router) -> None:
        self.router = router
        pptp = router.registry.by_name("pptp")
        other = router.registry.by_name("other")
        assert isinstance(pptp, PptpHandler)
        self.pptp = pptp
        self.other = other if isinstance(other, AddressOnlyHandler) else None

    def matches(self, pkt: Pkt, outbound: bool) -> bool:
        return not pkt.ip.frag & 0x1FFF and P.is_enhanced_gre(pkt.buf, pkt.ip.ihl)

    def _call_id(self, pkt: Pkt) -> int:
        return int(_U16.unpack_from(pkt.buf, pkt.ip.ihl + P.GRE_CALL_ID_OFFSET)[0])

    def outbound(self, pkt: Pkt, nat_if: str, nh: str, create: bool) -> Verdict:
        g = self.router.globals.get(nat_if)
        call = self.pptp.gre_out.get((g, pkt.ip.dst, self._call_id(pkt))) if g is not None else None
        if call is None or call.host != pkt.ip.src:
            return self.other.outbound(pkt, nat_if, nh, create) if self.other else None
        gre = self.pptp.gre_session(call, pkt)
        if isinstance(gre, Drop):
            return gre
        gre.last = pkt.now
        rewrite_address(pkt, gre.out_addr, outbound=True)
        self.router.count("gre_translated")
        return Fwd(session=gre)

    def inbound(self, pkt: Pkt) -> Verdict:
        call = self.pptp.gre_in.get((pkt.ip.dst, pkt.ip.src, self._call_id(pkt)))
        if call is None:
            if self.other is not None:
                return self.other.inbound(pkt)
            return None
        gre = self.pptp.gre_session(call, pkt)
        if isinstance(gre, Drop):
            return gre
        gre.last = pkt.now
        _U16.pack_into(pkt.buf, pkt.ip.ihl + P.GRE_CALL_ID_OFFSET, call.inside_id)
        rewrite_address(pkt, call.host, outbound=False)
        self.router.count("gre_translated")
        hop = self.router.hop(call.host)
        return Fwd(oif=hop[0], nh=hop[1], session=gre) if hop else Fwd(session=gre)

    def snapt_inbound(self, pkt: Pkt, target: SnaptTarget) -> Verdict:
        return self.other.snapt_inbound(pkt, target) if self.other is not None else None

    def on_remove(self, s: Session) -> None:
        for calls in self.pptp.calls.values():
            for c in calls:
                if c.gre is s:
                    c.gre = None

    def error_session(self, q: Quoted, outbound: bool) -> tuple[Session, int | None] | None:
        if not outbound:
            call = self.pptp.gre_out.get((q.src, q.dst, q.dport))
            if call is not None and call.gre is not None:
                return call.gre, None
            return None
        for calls in self.pptp.calls.values():
            for c in calls:
                if c.host == q.dst and c.ctrl.rem_addr == q.src and c.inside_id == q.dport and c.gre:
                    return c.gre, c.outside_id
        return None

    def describe(self, s: Session) -> dict[str, Any]:
        inside, outside, peer, ctrl = (s.info or {}).get("call", [s.in_port, s.out_port, None, None])
        return {"inside_port": inside, "outside_port": outside, "remote_port": peer,
                "pptp": {"inside_call_id": inside, "outside_call_id": outside, "peer_call_id": peer,
                         "control_session": ctrl}}

    def rebuild(self, s: Session) -> None:
        return None

    def restore(self, s: Session) -> bool:
        inside, _outside, _peer, ctrl_id = (s.info or {}).get("call", [None, None, None, None])
        for call in self.pptp.calls.get(ctrl_id, ()):
            if call.inside_id == inside and call.gre is None:
                if self.router.table.admit(s.origin, s.in_addr) is not None:
                    return False
                self.router.table.add(s)
                call.gre = s
                return True
        return False

