"""A supervised process tree: started in its own session, every descendant remembered, and
stopped as a whole — none may outlive its supervisor.

A kernel engine is a tree of host processes (vng -> virtme-run -> qemu; User-Mode Linux
forks a host process per guest process), and a child that leaves the process group still
has to end. Descendants are remembered by (PID, start time) while they are seen, so a
reused PID is never signalled.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO

import psutil

POLL = 0.1


class ProcessTreeError(RuntimeError):
    """Processes of the tree survived SIGKILL (stuck in the kernel)."""


class ProcessTree:
    def __init__(self, argv: Sequence[str], *, stdout: IO[bytes] | int | None = None,
                 stderr: IO[bytes] | int | None = None, cwd: Path | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=stdout,
                                     stderr=stderr, cwd=cwd, env=env,
                                     start_new_session=True)  # one killpg reaches them all
        self.seen: dict[int, float] = {}
        self.track()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def poll(self) -> int | None:
        return self.proc.poll()

    def track(self) -> None:
        """Remember the tree's processes as they are now (call it while it runs)."""
        try:
            root = psutil.Process(self.proc.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return
        for p in procs:
            try:
                self.seen.setdefault(p.pid, p.create_time())
            except psutil.NoSuchProcess:
                pass

    def alive(self) -> list[psutil.Process]:
        """Processes of this tree still running (a reused PID with another start time is
        not one of them)."""
        out = []
        for pid, created in self.seen.items():
            try:
                p = psutil.Process(pid)
                if p.create_time() == created and p.status() != psutil.STATUS_ZOMBIE:
                    out.append(p)
            except psutil.NoSuchProcess:
                pass
        return out

    def stop(self, grace: float) -> None:
        """SIGTERM the tree, SIGKILL what is left after GRACE seconds; raises when anything
        survives that too. A tree whose root already exited is waited for GRACE, then
        killed: its children must have gone with it."""
        if self.proc.poll() is not None:
            self._wait_gone(grace)
            for p in self.alive():
                _signal(p, signal.SIGKILL)
            self._wait_gone(grace)
        else:
            self.track()
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(self.proc.pid, sig)
                except ProcessLookupError:
                    pass
                for p in self.alive():  # anything of ours that left the process group
                    _signal(p, sig)
                try:
                    self.proc.wait(timeout=grace)
                except subprocess.TimeoutExpired:
                    continue
                if self._wait_gone(grace):
                    return
        left = self.alive()
        if left:
            raise ProcessTreeError(f"processes survived SIGKILL: {[p.pid for p in left]}")

    def _wait_gone(self, grace: float) -> bool:
        deadline = time.monotonic() + grace
        while self.alive():
            if time.monotonic() >= deadline:
                return False
            time.sleep(POLL)
        return True


def _signal(p: psutil.Process, sig: int) -> None:
    try:
        p.send_signal(sig)
    except psutil.NoSuchProcess:
        pass
