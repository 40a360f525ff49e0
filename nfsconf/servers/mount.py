"""Starting a FUSE server in the foreground and taking its mount down again, whatever state
the server is in (running, crashed, stopped, hung)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

from nfsconf.mounttable import (
    MountEntry,
    MountError,
    abort_connection,
    deferred_signals,
    fuse_mount_at,
    umount,
)


def _process_stuck(pid: int) -> bool:
    import psutil  # here, not at the top: the knfsd guest imports this module without site

    try:
        st = psutil.Process(pid).status()
    except psutil.NoSuchProcess:
        return True
    return st in (psutil.STATUS_STOPPED, psutil.STATUS_TRACING_STOP, psutil.STATUS_ZOMBIE,
                  psutil.STATUS_DEAD)


class ServerProcess:
    """One FUSE server run in the foreground (its -f mode) so the suite owns its PID."""

    def __init__(self, argv: list[str], mountpoint: Path, log: Path) -> None:
        self.argv = argv
        self.mountpoint = mountpoint
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.entry: MountEntry | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self, timeout: float = 15.0) -> MountEntry:
        before = fuse_mount_at(self.mountpoint)
        # Ctrl-C or SIGTERM between the fork and `self.proc` would orphan the server, which
        # then mounts after every clean-up has looked: they wait until it is ours to stop
        with open(self.log, "ab") as logf, deferred_signals():
            try:
                self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=logf,
                                             stderr=subprocess.STDOUT, start_new_session=True)
            except OSError as e:
                raise MountError(f"cannot start {self.argv[0]}: {e.strerror}") from e
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            entry = fuse_mount_at(self.mountpoint)
            if entry and (before is None or entry.mount_id != before.mount_id):
                self.entry = entry
                return entry
            if self.proc.poll() is not None:
                raise MountError(f"{self.argv[0]} exited with {self.proc.returncode} before "
                                 f"mounting: {self.log_tail()}")
            time.sleep(0.01)
        self.stop()
        raise MountError(f"{self.argv[0]} did not mount {self.mountpoint} within {timeout:.0f} s:"
                         f" {self.log_tail()}")

    def log_tail(self, lines: int = 3) -> str:
        try:
            text = self.log.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(text[-lines:]) or "(no output)"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace: float = 5.0) -> list[str]:
        """Unmount and end the server; never leaves the mount or the process behind.
        Returns notes on what it had to force (evidence for a cell that crashed)."""
        notes: list[str] = []
        with deferred_signals():
            self._unmount(notes)
            if self.proc is not None:
                self._end_process(grace, notes)
            # a server that mounted after the first look, or died leaving its mount
            if fuse_mount_at(self.mountpoint) is not None:
                notes.append("mounted after the server ended")
                self._unmount(notes)
        return notes

    def _unmount(self, notes: list[str]) -> None:
        entry = fuse_mount_at(self.mountpoint)
        if entry is None:
            return
        if self.proc is None or _process_stuck(self.proc.pid) or not self.alive():
            # A dead or stopped server cannot answer; a plain umount could wait on it.
            if abort_connection(entry.connection):
                notes.append(f"aborted fuse connection {entry.connection}")
        err = umount(self.mountpoint)
        if err:
            notes.append(f"umount: {os.strerror(err)}; lazy umount")
            if abort_connection(entry.connection):
                notes.append(f"aborted fuse connection {entry.connection}")
            umount(self.mountpoint, lazy=True)

    def _end_process(self, grace: float, notes: list[str]) -> None:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGCONT)
        try:
            self.proc.wait(grace)  # servers exit on their own once unmounted
            return
        except subprocess.TimeoutExpired:
            pass
        notes.append(f"server pid {self.proc.pid} did not exit after unmount; SIGTERM")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            notes.append("SIGKILL")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
