"""Session persistence across daemon restarts and crashes (R19/B2, issue 11 point 3): ``--state-file PATH``.

The engine exports and imports its sessions as JSON-able data
(``Router.export_state(now)`` / ``Router.import_state(state, now, elapsed)``,
nat/persist.py); this module adds the file, the downtime and the schedule.
``now`` is the daemon's ``time.monotonic()`` at save and at load (the engine
rebases saved times onto the new clock); ``elapsed`` is the downtime measured
with the wall clock (``time.time()`` at load minus at save, never negative),
which the engine counts as idle time: a session whose timer ran out while
passnat was down is not restored.

File format: ``{"format": "passnat-state", "version": 1, "saved_wall": <time.time()>,
"state": <engine export>}``, compact JSON, mode 0600, written atomically: a
temporary file in the same directory (``PATH.tmp<pid>``), fsync, rename over
PATH, fsync of the directory.  A crash at any point leaves the previous file
or the new one, never a mix.

When (``Saver``): every ``interval`` seconds (``--state-interval``, default
60), at SIGHUP, and at a clean stop.  A periodic or SIGHUP save runs in a
forked child process that writes the snapshot the fork froze, so the daemon's
loop pauses only for the fork (a few ms), not for the export and the write
(about 1 s for 64,000 sessions); at most one child runs at a time, and one
that takes longer than ``SAVE_TIME_LIMIT`` is killed (logged).  What a crash
or power loss can lose: sessions created since the last save, and the
activity since then (a restored session's idle time counts from its last
packet before that save).  The stop save runs in the daemon itself.

Loading (``load``): a missing file is normal (first start).  A file that is
not UTF-8, not JSON, truncated, holds NaN/Infinity, is not a passnat state
file, or whose state the engine rejects (nat/persist.py validates every
field before importing anything) is renamed ``PATH.rejected`` with one log
line saying why, and the daemon starts without sessions: never a crash, and
never the same bad file again at the next start.  Leftover ``PATH.tmp<pid>``
files of a crashed save are removed.
"""
from __future__ import annotations

import glob
import json
import logging
import math
import os
import signal
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("passnat.io.state")

FORMAT = "passnat-state"
VERSION = 1
SAVE_INTERVAL = 60.0  # seconds between periodic saves (--state-interval)
SAVE_TIME_LIMIT = 60.0  # a save child still running after this is killed
STOP_WAIT = 10.0  # at stop, how long to wait for a running save child before the final save

Clock = Callable[[], float]


class StateFileError(ValueError):
    """The file is not a usable passnat state file (the message says why)."""


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a number a state file may hold")


def parse(raw: bytes) -> dict[str, Any]:
    """The document in ``raw``; StateFileError when it is not a passnat state file."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise StateFileError(f"not UTF-8 text (byte {e.start}: binary or corrupt)") from None
    try:
        doc = json.loads(text, parse_constant=_no_constants)
    except RecursionError:
        raise StateFileError("not JSON (nested too deeply)") from None
    except ValueError as e:
        what = "empty" if not text.strip() else f"not JSON or truncated ({e})"
        raise StateFileError(what) from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise StateFileError("not a passnat state file (no \"format\": \"passnat-state\")")
    if doc.get("version") != VERSION:
        raise StateFileError(f"state file version {doc.get('version')!r}; this passnat reads version {VERSION}")
    wall = doc.get("saved_wall")
    if not isinstance(wall, (int, float)) or isinstance(wall, bool) or not math.isfinite(wall):
        raise StateFileError(f"saved_wall {wall!r} is not a finite time")
    return doc


def _max_fd() -> int:
    try:
        return max(256, int(os.sysconf("SC_OPEN_MAX")))
    except (ValueError, OSError):
        return 1 << 16


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _remove_leftovers(path: str) -> None:
    for tmp in glob.glob(glob.escape(path) + ".tmp*"):
        if tmp[len(path) + 4:].isdigit():
            try:
                os.unlink(tmp)
                log.info("state file: removed %s, left by an interrupted save", tmp)
            except OSError:
                pass


def reject(path: str) -> str:
    """Move a bad state file aside; the words for the log line."""
    aside = path + ".rejected"
    try:
        os.replace(path, aside)
    except OSError as e:
        return f"could not move it aside ({e.strerror or e})"
    return f"moved to {aside}"


def load(path: str, router: Any, clock: Clock = time.monotonic) -> int | None:
    """Import the sessions saved in ``path`` into ``router``; how many were restored,
    or None when nothing was imported (missing, unreadable or rejected file)."""
    _remove_leftovers(path)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        log.info("state file %s does not exist yet: starting without saved sessions", path)
        return None
    except OSError as e:
        log.error("state file %s cannot be read (%s): starting without saved sessions", path, e.strerror or e)
        return None
    before = router.counters().get("state_sessions_expired_or_invalid", 0)
    try:
        doc = parse(raw)
        downtime = max(0.0, time.time() - float(doc["saved_wall"]))
        n = int(router.import_state(doc.get("state"), clock(), elapsed=downtime))
    except Exception as e:  # noqa: BLE001 -- StateFileError, persist.StateError, or a bug: never a crash
        reason = str(e) if isinstance(e, ValueError) else f"{type(e).__name__}: {e}"
        log.error("state file %s rejected: %s; %s; starting without saved sessions", path,
                  _one_line(reason), reject(path))
        return None
    skipped = router.counters().get("state_sessions_expired_or_invalid", 0) - before
    log.info("state file %s: %d session(s) restored after %.1f s down%s", path, n, downtime,
             f" ({skipped} skipped: expired, or no longer allowed by the configuration)" if skipped else "")
    return n


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write(path: str, doc: dict[str, Any], *, parent: int | None = None) -> None:
    """Write ``doc`` to ``path`` atomically (raises OSError/ValueError).  ``parent``: only
    rename into place while that process still runs (a save child of a killed daemon
    must not replace the file under the next daemon)."""
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        data = json.dumps(doc, separators=(",", ":"), allow_nan=False).encode()  # one C call, unlike json.dump
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if parent is not None and os.getppid() != parent:
            raise OSError("the daemon is gone; its successor owns the state file")
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(path)


def snapshot(router: Any, now: float) -> dict[str, Any]:
    return {"format": FORMAT, "version": VERSION, "saved_wall": time.time(), "state": router.export_state(now)}


def save(path: str, router: Any, clock: Clock = time.monotonic) -> bool:
    """Export ``router``'s sessions to ``path`` (atomically); False on failure (logged)."""
    now = clock()
    try:
        doc = snapshot(router, now)
        write(path, doc)
    except Exception as e:  # noqa: BLE001 -- a failed save is logged, never fatal
        log.error("cannot save the sessions to %s: %s", path, _one_line(f"{type(e).__name__}: {e}"))
        return False
    log.info("state file %s: %d session(s) saved", path, len(doc["state"]["sessions"]))
    return True


class Saver:
    """The state file's schedule in the daemon: periodic and SIGHUP saves in a forked child,
    the final save at stop in process.  ``tick`` runs from the loop's housekeeping."""

    def __init__(self, path: str, interval: float = SAVE_INTERVAL, *, time_limit: float = SAVE_TIME_LIMIT):
        self.path = path
        self.interval = interval
        self.time_limit = time_limit
        self.child: int | None = None
        self.child_started = 0.0
        self.next_due = time.monotonic() + interval if interval > 0 else math.inf
        self.requested = False
        self.saves = 0  # background saves that completed
        self.failures = 0
        self._failure_logged = -math.inf

    def request(self) -> None:
        """Save at the next ``tick`` (SIGHUP)."""
        self.requested = True

    def tick(self, router: Any, clock: Clock) -> None:
        mono = time.monotonic()
        if self.child is not None:
            self._reap(block=False)
            if self.child is not None:
                if mono - self.child_started > self.time_limit:
                    log.warning("state file %s: a save took longer than %.0f s; stopped it (the previous "
                                "file stays)", self.path, self.time_limit)
                    self._kill()
                return
        if self.requested or mono >= self.next_due:
            self.requested = False
            self.next_due = mono + self.interval if self.interval > 0 else math.inf
            self._start(router, clock)

    def _start(self, router: Any, clock: Clock) -> None:
        now = clock()
        parent = os.getpid()
        try:
            pid = os.fork()
        except OSError as e:
            self._failed(f"cannot fork a save process ({e.strerror or e}); saving in process")
            save(self.path, router, clock)
            return
        if pid == 0:  # the child: write the frozen snapshot, never return into the daemon
            code = 1
            try:
                signal.set_wakeup_fd(-1)
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                    signal.signal(sig, signal.SIG_DFL)
                os.closerange(3, _max_fd())  # rings, sockets, the control socket: the daemon's, not ours
                write(self.path, snapshot(router, now), parent=parent)
                code = 0
            except BaseException as e:  # noqa: BLE001 -- reported by the exit status and one line
                try:
                    log.error("state file %s: background save failed: %s", self.path,
                              _one_line(f"{type(e).__name__}: {e}"))
                except BaseException:  # noqa: BLE001
                    pass
            finally:
                os._exit(code)
        self.child = pid
        self.child_started = time.monotonic()

    def _reap(self, *, block: bool) -> None:
        assert self.child is not None
        try:
            pid, status = os.waitpid(self.child, 0 if block else os.WNOHANG)
        except ChildProcessError:
            self.child = None
            return
        if pid == 0:
            return
        self.child = None
        if os.waitstatus_to_exitcode(status) == 0:
            self.saves += 1
            log.debug("state file %s saved (background save %d)", self.path, self.saves)
        else:
            self._failed("a background save failed (see the line above); the previous file stays")

    def _kill(self) -> None:
        if self.child is None:
            return
        try:
            os.kill(self.child, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self._reap(block=True)

    def _failed(self, message: str) -> None:
        self.failures += 1
        mono = time.monotonic()
        if mono - self._failure_logged >= 600.0:
            self._failure_logged = mono
            log.warning("state file %s: %s (failures so far: %d; logged at most every 10 min)",
                        self.path, message, self.failures)

    def final(self, router: Any, clock: Clock) -> bool:
        """The save at a clean stop: wait (bounded) for a running background save, then save here."""
        deadline = time.monotonic() + STOP_WAIT
        while self.child is not None and time.monotonic() < deadline:
            self._reap(block=False)
            if self.child is not None:
                time.sleep(0.05)
        self._kill()
        return save(self.path, router, clock)

    def close(self) -> None:
        """Stop a running background save (the daemon is going away without a final save)."""
        self._kill()
