"""sd_notify(3) without libsystemd: datagrams to ``$NOTIFY_SOCKET``.

systemd starts a ``Type=notify`` service with ``NOTIFY_SOCKET`` set to a Unix
datagram socket (a path, or an abstract name written with a leading ``@``).
The service sends newline-separated ``KEY=VALUE`` assignments:

  READY=1                       start-up finished (every interface attached, control socket listening)
  RELOADING=1 / READY=1         around a SIGHUP reload (MONOTONIC_USEC= as systemd 253 asks)
  STOPPING=1                    a clean stop began
  STATUS=...                    one line for ``systemctl status``
  WATCHDOG=1                    the loop is alive (``WatchdogSec=``; interval from ``$WATCHDOG_USEC``)

Without ``NOTIFY_SOCKET`` every call does nothing.  A send that fails is
ignored (systemd gone, socket full): notification never stops the router.
"""
from __future__ import annotations

import os
import socket
import time
from collections import deque


class Notifier:
    def __init__(self, environ: dict[str, str] | None = None):
        env = os.environ if environ is None else environ
        path = env.get("NOTIFY_SOCKET", "")
        self.address: str | None = None
        if path.startswith("@"):
            self.address = "\0" + path[1:]
        elif path.startswith("/"):
            self.address = path
        self.watchdog_interval: float | None = None
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog_interval = int(usec) / 2e6  # ping twice per period, as sd_watchdog_enabled advises
        self._next_watchdog = 0.0
        self._sock: socket.socket | None = None
        self.sent: deque[str] = deque(maxlen=32)  # the latest messages sent (for tests and debugging)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *assignments: str) -> bool:
        """Send ``KEY=VALUE`` lines in one datagram; True when the socket took it."""
        if self.address is None:
            return False
        msg = "\n".join(assignments)
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            self._sock.sendto(msg.encode(), self.address)
        except OSError:
            return False
        self.sent.append(msg)
        return True

    def ready(self, status: str = "") -> bool:
        return self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def reloading(self) -> bool:
        return self.send("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")

    def stopping(self) -> bool:
        return self.send("STOPPING=1")

    def status(self, text: str) -> bool:
        return self.send(f"STATUS={text}")

    def watchdog(self, mono: float) -> bool:
        """``WATCHDOG=1`` when the watchdog is on and half its period has passed."""
        if self.watchdog_interval is None or mono < self._next_watchdog:
            return False
        self._next_watchdog = mono + self.watchdog_interval
        return self.send("WATCHDOG=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
