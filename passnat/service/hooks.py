"""``Service``: what ``passnat run`` does as a system service, called from the daemon's hooks.

The daemon (passnat/io/daemon.py) calls, in its own loop and thread:

  start()          inside ``Daemon.start``, after the control socket: opens the HTTP
                   endpoint (``--http``); an error here stops the start like any other
  ready()          at the end of ``Daemon.start``: logs the data plane once, arms the log
                   rate limits, takes the first sample, sends READY=1 to systemd
  reloading()      before a SIGHUP reload: RELOADING=1
  reloaded(ok)     after it: READY=1 (also when the reload was refused: the old
                   configuration keeps running), counted as config_reloads / config_reloads_refused
  housekeeping(m)  once per second: HTTP timeouts, a history sample every 10 s, the
                   notable-event lines, the watchdog ping, a summary of suppressed log lines
  stopping()       first thing of a clean stop: STOPPING=1
  close()          the HTTP endpoint and the notify socket are closed

Nothing here touches a packet: the HTTP pages read the router's state between
ring bursts, like the control socket.
"""
from __future__ import annotations

import logging
import socket
import time
from typing import TYPE_CHECKING

from passnat import speedups
from passnat.control import views
from passnat.io.http import HttpServer, Response
from passnat.service import logs, page
from passnat.service.events import EventLog
from passnat.service.history import History, Sample
from passnat.service.notify import Notifier

if TYPE_CHECKING:
    from passnat.io.daemon import Daemon

log = logging.getLogger("passnat.daemon")

PROMETHEUS_TYPE = "text/plain; version=0.0.4; charset=utf-8"
SUPPRESSED_SUMMARY_EVERY = 60.0


class Service:
    def __init__(self, daemon: Daemon, http: str | None = None, notifier: Notifier | None = None):
        self.daemon = daemon
        self.http_bind = http
        self.http: HttpServer | None = None
        self.notify = notifier if notifier is not None else Notifier()
        self.history = History()
        self.events = EventLog()
        self.last_reload = ""
        self._next_summary = 0.0

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        if self.http_bind:
            self.http = HttpServer(self.http_bind, self.daemon.reactor, {
                "/": self.page, "/metrics": self.metrics, "/healthz": self.health})
            log.info("http endpoint %s (status page /, Prometheus metrics /metrics)", self.http.url)

    def ready(self) -> None:
        log.info("data plane: %s (%s)%s", speedups.mode(), speedups.reason(),
                 "" if speedups.mode() == "compiled" else
                 "; forwarding runs in pure Python, slower: install a C compiler and the Python headers "
                 "(Debian: gcc python3-dev) and reinstall passnat to build it")
        limit = logs.rate_limit()
        if limit is not None:
            limit.arm()
        mono = time.monotonic()
        self._sample(mono)
        self.events.check(self.daemon.router.counters(), mono, self._context())
        links = ", ".join(f"{lk.name}={lk.linux}" for lk in self.daemon.links.values())
        if self.notify.ready(f"forwarding on {links}"):
            log.info("systemd notified: ready")

    def reloading(self) -> None:
        self.notify.reloading()

    def reloaded(self, ok: bool) -> None:
        d = self.daemon
        d.counters["config_reloads" if ok else "config_reloads_refused"] += 1
        self.last_reload = (f"configuration reloaded {time.strftime('%H:%M:%S')}" if ok else
                            f"reload REFUSED {time.strftime('%H:%M:%S')}: the previous configuration runs")
        links = ", ".join(f"{lk.name}={lk.linux}" for lk in d.links.values())
        self.notify.ready(f"forwarding on {links}" + ("" if ok else "; last reload refused (see the log)"))

    def stopping(self) -> None:
        self.notify.stopping()

    def close(self) -> None:
        if self.http is not None:
            self.http.close()
            self.http = None
        self.notify.close()

    def housekeeping(self, mono: float) -> None:
        if self.http is not None:
            self.http.expire(mono)
        if self.history.due(mono):
            self._sample(mono)
        self.events.check(self.daemon.router.counters(), mono, self._context())
        self.notify.watchdog(mono)
        limit = logs.rate_limit()
        if limit is not None and mono >= self._next_summary:
            self._next_summary = mono + SUPPRESSED_SUMMARY_EVERY
            n = limit.take_suppressed()
            if n:
                log.warning("%d log line(s) suppressed by the rate limit in the last %d s", n,
                            int(SUPPRESSED_SUMMARY_EVERY))

    # ------------------------------------------------------------ data

    def _context(self) -> dict[str, object]:
        r = self.daemon.router
        return {"sessions": len(r.table), "maximum": r.config.nat.session.maximum,
                "esp_mode": r.config.nat.esp_mode.value}

    def _sample(self, mono: float) -> None:
        self.history.add(self.current())

    def current(self) -> Sample:
        """The state now, as a history sample (the last point of the page's charts)."""
        d = self.daemon
        rx = tx = 0
        drops: dict[str, int] = {}
        for link in d.links.values():
            rx += link.rx_packets
            tx += link.tx_packets
            for k, v in link.counters.items():
                if v and k in _LINK_DROPS:
                    drops[k] = drops.get(k, 0) + v
            ring = link.ring_stats()[1]
            if ring:
                drops["rx_ring_full"] = drops.get("rx_ring_full", 0) + ring
        for k, v in d.router.counters().items():
            if v and k in _ENGINE_DROPS:
                drops[k] = v
        if d.counters.get("internal_error"):
            drops["internal_error"] = drops.get("internal_error", 0) + d.counters["internal_error"]
        return Sample(time.time(), len(d.router.table), rx, tx, drops)

    def uptime(self) -> float:
        return time.monotonic() - self.daemon.started

    # ------------------------------------------------------------ pages

    def metrics(self) -> Response:
        d = self.daemon
        text = views.metrics(d.router, d.links.values(), d.counters, now=d.clock(), uptime=self.uptime())
        return Response(200, PROMETHEUS_TYPE, text.encode())

    def health(self) -> Response:
        return Response(200, "text/plain; charset=utf-8", b"ok\n")

    def page(self) -> Response:
        d = self.daemon
        now = d.clock()
        counters = views.counters(d.router, d.links.values(), d.counters, uptime=self.uptime())
        data = page.PageData(
            hostname=d.router.config.hostname or socket.gethostname(),
            version=_version(), uptime=self.uptime(), data_plane=speedups.mode(),
            data_plane_reason=speedups.reason(), sessions=len(d.router.table),
            maximum=d.router.config.nat.session.maximum, interfaces=counters["interfaces"], counters=counters,
            vpn=views.vpn(d.router, now, limit=page.ROW_LIMIT), doctor=views.doctor(d.router, now),
            history=self.history.with_sample(self.current()), reload=self.last_reload)
        return Response(200, "text/html; charset=utf-8", page.render(data).encode())


def _version() -> str:
    import passnat

    return str(passnat.__version__)


def _drop_names() -> tuple[frozenset[str], frozenset[str]]:
    from passnat.io.linkdrops import LinkDrop
    from passnat.nat.drops import Drop

    return frozenset(d.value for d in Drop), frozenset(d.value for d in LinkDrop)


_ENGINE_DROPS, _LINK_DROPS = _drop_names()
