"""passnat as an installed service: what the daemon needs around the router itself.

  notify.py   sd_notify over ``$NOTIFY_SOCKET`` (READY, RELOADING, STOPPING, WATCHDOG)
  unit.py     the systemd unit shipped with the package (passnat.service), ``passnat service``
  logs.py     log lines for a terminal or for journald, rate limits for per-packet messages
  events.py   one log line per notable event (table full, pool exhausted, AH, ESP contention)
  history.py  the ring buffer of samples behind the status page's charts
  page.py     the status page (HTML with inline SVG, no JavaScript)
  hooks.py    ``Service``: the daemon's hook calls (start, ready, reload, housekeeping, stop)
  deps.py     one clear line when an optional Python package is missing

The HTTP endpoint itself is passnat/io/http.py (it runs in the daemon's reactor).
"""
