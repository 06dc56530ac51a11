"""Helpers shared by the peer programs: the start barrier, JSON results, SIGTERM as a stop flag."""
from __future__ import annotations

import json
import signal
import sys
from typing import Any


def barrier(enabled: bool) -> None:
    """Say ``READY`` and wait for the harness's go line (no-op when not enabled)."""
    if not enabled:
        return
    print("READY", flush=True)
    sys.stdin.readline()


def result(data: dict[str, Any]) -> None:
    print(json.dumps(data, sort_keys=True), flush=True)


class StopFlag:
    """Becomes true on SIGTERM/SIGINT so loops end and still print their summary."""

    def __init__(self) -> None:
        self.stopped = False
        signal.signal(signal.SIGTERM, self._set)
        signal.signal(signal.SIGINT, self._set)

    def _set(self, *_: object) -> None:
        self.stopped = True

    def __bool__(self) -> bool:
        return self.stopped
