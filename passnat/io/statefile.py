"""Session persistence across daemon restarts (R19/B2): ``--state-file PATH``.

The engine exports and imports its sessions as JSON-able data
(``Router.export_state(now)`` / ``Router.import_state(state, now, elapsed)``,
nat/persist.py); this module adds the file and the downtime.  ``now`` is the
daemon's ``time.monotonic()`` at save and at load (the engine rebases saved
times onto the new clock); ``elapsed`` is the downtime measured with the wall
clock (``time.time()`` at load minus at save, never negative), which the
engine counts as idle time: a session whose timer ran out while passnat was
down is not restored.

File format: ``{"format": "passnat-state", "version": 1, "saved_wall": <time.time()>,
"state": <engine export>}``, written atomically (temporary file + rename),
mode 0600.

Invariants: a missing file is not an error (first start); an unreadable or
malformed file, or one the engine rejects, is logged and ignored (the daemon
starts without sessions; it never refuses to start because of it).
"""
from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("passnat.io.state")

FORMAT = "passnat-state"
VERSION = 1

Clock = Callable[[], float]


def load(path: str, router: Any, clock: Clock = time.monotonic) -> int | None:
    """Import the sessions saved in ``path`` into ``router``; how many were restored,
    or None when nothing was imported."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        log.info("state file %s does not exist yet: starting without saved sessions", path)
        return None
    except (OSError, ValueError) as e:
        log.error("state file %s unreadable (%s): starting without saved sessions", path, e)
        return None
    if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("version") != VERSION:
        log.error("state file %s is not a passnat state file (version %d): ignored", path, VERSION)
        return None
    try:
        downtime = max(0.0, time.time() - float(data["saved_wall"]))
    except (KeyError, TypeError, ValueError):
        log.error("state file %s lacks its save time: ignored", path)
        return None
    try:
        n = int(router.import_state(data.get("state"), clock(), elapsed=downtime))
    except Exception:
        log.exception("state file %s: the engine rejected the saved state; starting without it", path)
        return None
    log.info("state file %s: %d session(s) restored after %.1f s down", path, n, downtime)
    return n


def save(path: str, router: Any, clock: Clock = time.monotonic) -> bool:
    """Export ``router``'s sessions to ``path`` (atomically); False on failure (logged)."""
    now = clock()
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        doc = {"format": FORMAT, "version": VERSION, "saved_wall": time.time(), "state": router.export_state(now)}
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(doc, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except Exception:
        log.exception("cannot save the sessions to %s", path)
        try:
            os.unlink(tmp)
        except OSError:
            pass
        return False
    log.info("state file %s: %d session(s) saved", path, len(router.sessions(now)))
    return True
