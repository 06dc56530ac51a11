"""keepalived's health check of the local passnat: ``passnat ha check`` (docs/ha.md).

Exit 0 when the daemon answers ``ping`` on its control socket within
``--timeout`` seconds, 1 otherwise (no socket, nobody listening, no answer:
the daemon died or hangs).  Standard library only and no import of passnat
itself, so that keepalived can run it every second cheaply as
``python3 -S /path/to/passnat/ha/check.py --control PATH`` (about 30 ms
instead of the ~250 ms of the full ``passnat`` command line).
"""
from __future__ import annotations

import argparse
import json
import socket
import sys

DEFAULT_CONTROL_PATH = "/run/passnat/control.sock"


def healthy(path: str, timeout: float) -> tuple[bool, str]:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(path)
            s.sendall(b'{"op":"ping"}\n')
            data = b""
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
    except OSError as e:
        return False, f"no answer on {path}: {e.strerror or e}"
    try:
        answer = json.loads(data)
    except ValueError:
        return False, f"unreadable answer on {path}"
    if not isinstance(answer, dict) or not answer.get("ok"):
        return False, f"the daemon on {path} refused: {answer!r:.100}"
    return True, f"passnat pid {answer.get('data', {}).get('pid')} answers on {path}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="passnat ha check", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--control", default=DEFAULT_CONTROL_PATH, metavar="PATH")
    ap.add_argument("--timeout", type=float, default=1.0, metavar="SECONDS")
    ap.add_argument("--quiet", "-q", action="store_true")
    a = ap.parse_args(argv)
    ok, text = healthy(a.control, a.timeout)
    if not a.quiet:
        print(("ok: " if ok else "FAILED: ") + text, file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
