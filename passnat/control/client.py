"""The command side of the control socket: send one request, get the daemon's answer.

``request(path, op, **args)`` returns the answer's data or raises
``ClientError`` with the message to print and the exit status to use:

  * 3  no daemon: the socket does not exist, nobody listens, or no answer
       within the timeout;
  * 4  permission denied (the socket is root-only);
  * 5  the daemon is busy: every control connection slot is in use (or this
       connection sent nothing in time); try again;
  * 1  the daemon answered with an error (e.g. no such session).
"""
from __future__ import annotations

import json
import socket
import time
from typing import Any

from passnat.control.protocol import encode

EXIT_ERROR = 1
EXIT_NO_DAEMON = 3
EXIT_PERMISSION = 4
EXIT_BUSY = 5


class ClientError(Exception):
    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.message = message
        self.status = status


def _connect(s: socket.socket, path: str, deadline: float) -> None:
    """Connect, retrying while the daemon's accept queue is full (EAGAIN on a Unix socket):
    the daemon drains it every loop turn."""
    while True:
        try:
            s.connect(path)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise TimeoutError from None
            time.sleep(0.02)


def request(path: str, op: str, timeout: float = 10.0, **args: Any) -> Any:
    hint = "is `passnat run` running? Its --control PATH must match this command's"
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            _connect(s, path, time.monotonic() + timeout)
            try:
                s.sendall(encode({"op": op, **args}))
            except (BrokenPipeError, ConnectionResetError):
                pass  # closed at once (busy, not root): its last words may be waiting below
            chunks = []
            while True:
                try:
                    data = s.recv(1 << 16)
                except ConnectionResetError:
                    if not chunks:
                        raise
                    break  # the daemon closed after its answer
                if not data:
                    break
                chunks.append(data)
    except FileNotFoundError:
        raise ClientError(f"no passnat daemon: control socket {path} does not exist ({hint})",
                          EXIT_NO_DAEMON) from None
    except ConnectionRefusedError:
        raise ClientError(f"no passnat daemon listening on {path} (stale socket; {hint})",
                          EXIT_NO_DAEMON) from None
    except PermissionError:
        raise ClientError(f"permission denied on {path}: the control socket is for root only",
                          EXIT_PERMISSION) from None
    except TimeoutError:
        raise ClientError(f"the passnat daemon on {path} did not answer within {timeout:g} s",
                          EXIT_NO_DAEMON) from None
    except OSError as e:
        raise ClientError(f"cannot talk to the passnat daemon on {path}: {e.strerror or e}",
                          EXIT_NO_DAEMON) from None
    raw = b"".join(chunks)
    if not raw:
        raise ClientError(f"the passnat daemon on {path} closed the connection without an answer "
                          "(root only)", EXIT_PERMISSION)
    try:
        answer = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ClientError(f"unreadable answer from the daemon on {path}", EXIT_ERROR) from None
    if not isinstance(answer, dict) or not answer.get("ok"):
        msg = answer.get("error") if isinstance(answer, dict) else None
        if isinstance(answer, dict) and answer.get("busy") is True:
            raise ClientError(f"the passnat daemon on {path} is busy: {msg}", EXIT_BUSY)
        raise ClientError(str(msg or "the daemon refused the request"), EXIT_ERROR)
    return answer.get("data")
