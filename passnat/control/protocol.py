"""The control socket's wire format, shared by the daemon and the ``passnat`` commands.

One request per connection: the client sends one JSON object on one line,
the daemon answers with one JSON object and closes the connection.

  request:  {"op": "<operation>", ...arguments}
  answer:   {"ok": true, "data": <JSON value>}  or  {"ok": false, "error": "<message>"}

Operations (``OPS``): ``status_nat``, ``status_filter``, ``counters``,
``config``, ``arp``, ``metrics``, ``doctor``, ``clear_nat`` (argument ``id``: an int, or null for all),
``ping``, ``ha_status``, ``ha_role`` (argument ``role``: ``master`` or ``backup``; docs/ha.md).
The daemon answers only root (``SO_PEERCRED``), and the socket file
is mode 0600.

Limits: a request line is at most ``MAX_REQUEST`` bytes and holds at most
``MAX_NESTING`` JSON arrays and objects (a request is one flat object); more
is a bad request answered with an error, never parsed.  When every
connection slot is taken the daemon answers ``{"ok": false, "busy": true,
"error": ...}`` and closes (the commands exit with status 5).
"""
from __future__ import annotations

import json
from typing import Any

DEFAULT_CONTROL_PATH = "/run/passnat/control.sock"
MAX_REQUEST = 16 * 1024
MAX_NESTING = 16

OPS = ("status_nat", "status_filter", "counters", "config", "arp", "metrics", "doctor", "clear_nat", "ping",
       "ha_status", "ha_role")


class ProtocolError(Exception):
    pass


def encode(obj: Any) -> bytes:
    return (json.dumps(obj, default=_default, separators=(",", ":")) + "\n").encode()


def _default(obj: Any) -> Any:
    if isinstance(obj, (set, frozenset, tuple)):
        return sorted(obj) if isinstance(obj, (set, frozenset)) else list(obj)
    if isinstance(obj, bytes):
        return obj.hex()
    return str(obj)


def decode_request(raw: bytes) -> dict[str, Any]:
    """Parse one request line; ProtocolError with a message for anything invalid."""
    if len(raw) > MAX_REQUEST:
        raise ProtocolError(f"request too long (more than {MAX_REQUEST} bytes)")
    if raw.count(b"[") + raw.count(b"{") > MAX_NESTING:
        raise ProtocolError(f"request too deeply nested (more than {MAX_NESTING} JSON arrays/objects)")
    try:
        req = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise ProtocolError(f"request is not JSON: {e}") from None
    if not isinstance(req, dict) or req.get("op") not in OPS:
        raise ProtocolError(f"unknown operation; expected one of {', '.join(OPS)}")
    if req["op"] == "clear_nat":
        sid = req.get("id")
        if sid is not None and (not isinstance(sid, int) or isinstance(sid, bool) or sid < 0):
            raise ProtocolError("clear_nat: id must be a non-negative integer or null (all)")
    if req["op"] == "ha_role" and req.get("role") not in ("master", "backup"):
        raise ProtocolError("ha_role: role must be master or backup")
    return req
