"""The sync protocol's framing and authentication (sans-IO): bytes in, messages out.

Every message is one frame::

    magic "PNHA" | version 1 | type | flags (2) | sequence (8) | length (4) | payload | HMAC-SHA256 (32)

The HMAC covers a direction byte (``C`` client to server, ``S`` server to
client), the 20-byte header and the payload.  A connection starts with two
frames authenticated with the shared key itself:

  1. the server (the side that accepted) sends ``CHALLENGE``: 16 random bytes;
  2. the client answers ``HELLO``: its own 16 random bytes and a JSON object
     (protocol version, the session record's field names, its role).

From then on both directions use the connection key ``HMAC(key, "passnat-ha-v1" |
server nonce | client nonce)`` and sequence numbers 1, 2, 3, ... per
direction: a frame of another connection, a replayed, reordered, reflected
or altered frame fails the check.  Payloads are JSON (UTF-8), at most
``MAX_PAYLOAD`` bytes.

A frame that fails (bad magic or version, too long, wrong MAC or sequence)
raises ``WireError`` naming the reason; the caller counts it, logs it and
closes the connection (a TCP stream cannot be resynchronised after a bad
frame; the reconnection brings a full transfer).  A frame cut short by the
end of the connection is ``truncated`` (``Decoder.close``).
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import struct
from typing import Any

MAGIC = b"PNHA"
VERSION = 1
HEADER = struct.Struct("!4sBBHQI")
MAC_LEN = 32
MAX_PAYLOAD = 4 << 20
NONCE_LEN = 16

# message types
CHALLENGE, HELLO, BULK_BEGIN, UPDATE, BULK_END, HEARTBEAT = 1, 2, 3, 4, 5, 6
NAMES = {CHALLENGE: "challenge", HELLO: "hello", BULK_BEGIN: "bulk_begin", UPDATE: "update",
         BULK_END: "bulk_end", HEARTBEAT: "heartbeat"}


class WireError(ValueError):
    """A frame that must not be used; ``reason`` is the counter's suffix."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def nonce() -> bytes:
    return os.urandom(NONCE_LEN)


def connection_key(key: bytes, server_nonce: bytes, client_nonce: bytes) -> bytes:
    return hmac.new(key, b"passnat-ha-v1" + server_nonce + client_nonce, hashlib.sha256).digest()


def _mac(key: bytes, direction: bytes, header: bytes, payload: bytes) -> bytes:
    h = hmac.new(key, direction, hashlib.sha256)
    h.update(header)
    h.update(payload)
    return h.digest()


class Encoder:
    """Frames of one direction (``direction`` b"C" or b"S") of one connection."""

    def __init__(self, key: bytes, direction: bytes):
        self.key = key
        self.direction = direction
        self.seq = 0

    def rekey(self, key: bytes) -> None:
        """After the handshake: the connection key, sequence numbers from 1."""
        self.key = key
        self.seq = 0

    def frame(self, mtype: int, payload: bytes) -> bytes:
        if len(payload) > MAX_PAYLOAD:
            raise ValueError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
        header = HEADER.pack(MAGIC, VERSION, mtype, 0, self.seq, len(payload))
        self.seq += 1
        return header + payload + _mac(self.key, self.direction, header, payload)

    def message(self, mtype: int, obj: Any) -> bytes:
        return self.frame(mtype, json.dumps(obj, separators=(",", ":")).encode())


class Decoder:
    """Frames of one direction as they arrive over the stream.

    ``feed(data)`` returns the complete, authenticated ``(type, payload)`` in
    order and raises ``WireError`` at the first bad frame (nothing after it
    is returned).  Memory: at most one frame (``MAX_PAYLOAD``) is buffered."""

    def __init__(self, key: bytes, direction: bytes):
        self.key = key
        self.direction = direction
        self.seq = 0
        self.buf = bytearray()
        self.failed = False

    def rekey(self, key: bytes) -> None:
        self.key = key
        self.seq = 0

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        if self.failed:
            return []
        self.buf += data
        out: list[tuple[int, bytes]] = []
        while len(self.buf) >= HEADER.size:
            magic, version, mtype, _flags, seq, length = HEADER.unpack_from(self.buf)
            if magic != MAGIC or version != VERSION:
                self.failed = True
                raise WireError("bad_frame", f"not a passnat sync frame (magic {bytes(magic)!r}, version {version})")
            if length > MAX_PAYLOAD:
                self.failed = True
                raise WireError("bad_frame", f"frame of {length} bytes announced (at most {MAX_PAYLOAD})")
            end = HEADER.size + length + MAC_LEN
            if len(self.buf) < end:
                break
            header = bytes(self.buf[:HEADER.size])
            payload = bytes(self.buf[HEADER.size:HEADER.size + length])
            mac = bytes(self.buf[HEADER.size + length:end])
            del self.buf[:end]
            if not hmac.compare_digest(mac, _mac(self.key, self.direction, header, payload)):
                self.failed = True
                raise WireError("auth_failed", f"{NAMES.get(mtype, mtype)} frame failed authentication "
                                               "(wrong shared key, or altered)")
            if seq != self.seq:
                self.failed = True
                raise WireError("auth_failed", f"frame out of sequence (got {seq}, expected {self.seq}): "
                                               "replayed or reordered")
            self.seq += 1
            out.append((mtype, payload))
            if mtype in (CHALLENGE, HELLO):
                break  # the key changes after the handshake frame: the caller rekeys, then feeds b""
        return out

    def pending(self) -> int:
        return len(self.buf)

    def close(self) -> None:
        """The stream ended: a partial frame left over is ``truncated``."""
        if self.buf and not self.failed:
            n = len(self.buf)
            self.buf.clear()
            raise WireError("truncated", f"the connection ended inside a frame ({n} byte(s) of it received)")


def decode_json(payload: bytes) -> Any:
    """A payload's JSON object (``WireError`` "malformed" if it is not one)."""
    try:
        obj = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as e:
        raise WireError("malformed", f"payload is not JSON ({e})") from None
    if not isinstance(obj, dict):
        raise WireError("malformed", "payload is not a JSON object")
    return obj
