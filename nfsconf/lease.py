"""Hold a server's request in flight from outside the server: a write lease on the source
file it will open.

A server that passes files through opens the source's file when the kernel sends OPEN (or
READ). While nfsconf holds a write lease on that file, the open blocks in the kernel until
the lease is released: the server has read the FUSE request and cannot answer it yet, with
no help from the server itself. F_GETLEASE tells when a break started, i.e. when the server
reached the open. The break is never acknowledged by downgrading: only release() lets the
open go on (or /proc/sys/fs/lease-break-time, 45 s by default, runs out).
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from pathlib import Path


class LeaseError(RuntimeError):
    """The lease could not be taken (the file is open elsewhere, or its filesystem has none)."""


class Lease:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self.fd: int | None = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            fcntl.fcntl(self.fd, fcntl.F_SETLEASE, fcntl.F_WRLCK)
            # the break is announced with SIGIO, whose default action ends this process:
            # no owner, no signal (the break waits all the same)
            fcntl.fcntl(self.fd, fcntl.F_SETOWN, 0)
        except OSError as e:
            os.close(self.fd)
            self.fd = None
            raise LeaseError(f"cannot take a write lease on {path}: {e.strerror} (open "
                             "elsewhere, or its filesystem has no leases)") from e

    def breaking(self) -> bool:
        """Someone's open of the file is waiting for this lease."""
        with self._lock:
            if self.fd is None:
                return False
            return fcntl.fcntl(self.fd, fcntl.F_GETLEASE) != fcntl.F_WRLCK

    def wait_breaking(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self.breaking():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def release(self) -> None:
        """Let the waiting open go on; safe to call twice, from any thread."""
        with self._lock:
            if self.fd is not None:
                os.close(self.fd)  # closing the lease's file removes the lease
                self.fd = None

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
