"""Processes and commands inside the lab's network namespaces.

Role: the only module that runs programs for the lab.  Every command is
``ip netns exec <ns> ...`` (or plain ``ip``/``nft`` from the root namespace
that only touches lab namespaces), so nothing the lab starts can send
packets anywhere but over the lab's own veth pairs and loopbacks.

Invariants:
  * a background program is started with ``ip netns exec`` which *execs* it:
    the pid we record is the program's own pid, and we stop it by that pid;
  * ``kill_namespace_pids`` only signals pids that the kernel reports as
    living in a namespace the lab created (``ip netns pids``);
  * nothing here kills by process name.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path


class LabError(RuntimeError):
    """A lab command failed; the message says which and why."""


def run(argv: Sequence[str], *, check: bool = True, timeout: float = 60.0,
        input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command (root namespace) and capture its output."""
    try:
        cp = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, input=input,
                            check=False)
    except subprocess.TimeoutExpired as e:
        raise LabError(f"timed out after {timeout:.0f} s: {' '.join(argv)}") from e
    if check and cp.returncode != 0:
        raise LabError(f"command failed ({cp.returncode}): {' '.join(argv)}\n{cp.stderr.strip()}")
    return cp


def nsrun(ns: str, argv: Sequence[str], *, check: bool = True, timeout: float = 60.0,
          input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command inside namespace ``ns`` and capture its output."""
    return run(["ip", "netns", "exec", ns, *argv], check=check, timeout=timeout, input=input)


def list_namespaces() -> list[str]:
    out = run(["ip", "netns", "list"], check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def namespace_pids(ns: str) -> list[int]:
    out = run(["ip", "netns", "pids", ns], check=False).stdout
    return [int(p) for p in out.split() if p.isdigit()]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def kill_namespace_pids(namespaces: Sequence[str], grace: float = 1.0) -> int:
    """SIGTERM, then SIGKILL, every process living in the given namespaces (by pid)."""
    victims = [p for ns in namespaces for p in namespace_pids(ns)]
    for pid in victims:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(pid_alive(p) for p in victims):
        time.sleep(0.05)
    for ns in namespaces:
        for pid in namespace_pids(ns):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    return len(victims)


@dataclass
class Proc:
    """A program the lab started in a namespace (``ip netns exec`` execs it: pid is its own)."""

    name: str
    ns: str
    argv: list[str]
    popen: subprocess.Popen[str]
    log: Path | None
    _stdout: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def readline(self, timeout: float) -> str | None:
        """One stdout line (for programs started with ``pipe=True``), None on timeout/EOF."""
        import select

        assert self.popen.stdout is not None
        r, _, _ = select.select([self.popen.stdout], [], [], timeout)
        if not r:
            return None
        line = self.popen.stdout.readline()
        if not line:
            return None
        self._stdout.append(line)
        return line

    def send(self, text: str) -> None:
        assert self.popen.stdin is not None
        self.popen.stdin.write(text)
        self.popen.stdin.flush()

    def stop(self, sig: int = signal.SIGTERM, grace: float = 3.0) -> int | None:
        """Stop by pid: ``sig``, then SIGKILL after ``grace`` seconds. Returns the exit code."""
        if self.popen.poll() is None:
            try:
                self.popen.send_signal(sig)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        return self.popen.returncode

    def wait(self, timeout: float) -> int | None:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def output(self, timeout: float = 30.0) -> str:
        """Wait for exit (stopping it after ``timeout``) and return all of its stdout."""
        assert self.popen.stdout is not None
        try:
            rest, _ = self.popen.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            rest, _ = self.popen.communicate()
        return "".join(self._stdout) + (rest or "")


def spawn(name: str, ns: str, argv: Sequence[str], *, log: Path | None = None, pipe: bool = False,
          env: dict[str, str] | None = None, new_session: bool = True) -> Proc:
    """Start ``argv`` in ``ns`` in the background.

    ``pipe``: stdin/stdout are pipes (for peers that print JSON or wait for "go");
    otherwise stdout and stderr go to ``log`` (or /dev/null).  ``new_session``
    keeps a terminal's Ctrl-C away from it: the lab stops it itself, in order.
    """
    full = ["ip", "netns", "exec", ns, *argv]
    with open(log if log is not None else os.devnull, "a") as logf:
        if pipe:
            p = subprocess.Popen(full, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=logf, text=True, env=env, start_new_session=new_session)
        else:
            p = subprocess.Popen(full, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                                 text=True, env=env, start_new_session=new_session)
    return Proc(name=name, ns=ns, argv=list(argv), popen=p, log=log)
