"""Starting a FUSE server in the foreground and taking its mount down again, whatever state
the server is in (running, crashed, stopped, hung)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from nfsconf import process
from nfsconf.mounttable import (
    MountEntry,
    MountError,
    MountWatch,
    abort_connection,
    deferred_signals,
    fuse_mount_at,
    umount,
)
from nfsconf.servers.inplace import (
    InPlaceError,
    InPlaceRestart,
    same_mount,
    served_by,
    wait_answering,
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
        # the process group of every process started (the mount's, each successor's): what
        # a server left running beside its serving process (an fd keeper) ends at stop()
        self.groups: list[int] = []

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self, timeout: float = 15.0) -> MountEntry:
        before = fuse_mount_at(self.mountpoint)
        with MountWatch() as watch:
            self._spawn(self.argv)
            watch.watch_exit(self.proc.pid)
            deadline = time.monotonic() + timeout
            while (left := deadline - time.monotonic()) > 0:
                entry = fuse_mount_at(self.mountpoint)
                if entry and (before is None or entry.mount_id != before.mount_id):
                    self.entry = entry
                    return entry
                if self.proc.poll() is not None:
                    raise MountError(f"{self.argv[0]} exited with {self.proc.returncode} "
                                     f"before mounting: {self.log_tail()}")
                watch.wait(left)
        self.stop()
        raise MountError(f"{self.argv[0]} did not mount {self.mountpoint} within {timeout:.0f} s:"
                         f" {self.log_tail()}")

    def _spawn(self, argv: list[str]) -> subprocess.Popen[bytes]:
        """Start ARGV as the serving process (self.proc)."""
        # Ctrl-C or SIGTERM between the fork and `self.proc` would orphan the server, which
        # then mounts after every clean-up has looked: they wait until it is ours to stop
        with open(self.log, "ab") as logf, deferred_signals():
            try:
                self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logf,
                                             stderr=subprocess.STDOUT, start_new_session=True)
            except OSError as e:
                raise MountError(f"cannot start {argv[0]}: {e.strerror}") from e
            self.groups.append(self.proc.pid)
        return self.proc

    def restart_in_place(self, how: str, argv: list[str], timeout: float,
                         old_gone: Callable[[], None] | None = None) -> InPlaceRestart:
        """Restart without unmount with the profile's [restart] command ARGV, whose {pid} is
        self.pid: "handover" starts the successor, which makes the old process exit;
        "sigkill" SIGKILLs the old process (that one only: whatever keeps the fd lives on)
        and then starts the successor. OLD_GONE runs once the old process is gone. What
        happened is taken from the kernel (nfsconf/servers/inplace.py), not from ARGV.

        After a SIGKILL the successor is forked while nobody serves the mount: the caller
        must hold no file of the mount open, or the child's close of it (a FLUSH) waits for
        the very successor it was to become."""
        if self.proc is None or not self.alive():
            raise InPlaceError(f"no server running to restart: {self.log_tail()}")
        before = fuse_mount_at(self.mountpoint)
        if before is None:
            raise InPlaceError(f"{self.mountpoint} is not mounted before the restart")
        old = self.proc
        started = time.monotonic()
        if how == "sigkill":
            old.kill()
            old.wait()
            if old_gone is not None:
                old_gone()
        new = self._spawn(argv)
        if how == "handover":
            self._wait_handover(old, new, timeout)
            if old_gone is not None:
                old_gone()
        try:
            wait_answering(self.mountpoint, timeout)
        except InPlaceError:
            same_mount(before, self.mountpoint)  # the better diagnosis: it mounted anew
            raise
        if new.poll() is not None:
            raise InPlaceError(f"the successor {argv[0]} exited with {new.returncode}: "
                               f"{self.log_tail()}")
        entry = same_mount(before, self.mountpoint)
        waited = served_by(new.pid, entry, self.mountpoint, timeout)
        return InPlaceRestart(how, old.pid, new.pid, entry.mount_id, entry.connection,
                              round(time.monotonic() - started, 3), round(waited, 3))

    def _wait_handover(self, old: subprocess.Popen[bytes], new: subprocess.Popen[bytes],
                       timeout: float) -> None:
        """The old process exits (the successor asked it to hand over) while the successor
        runs on."""
        deadline = time.monotonic() + timeout
        while old.poll() is None:
            if new.poll() is not None:
                raise InPlaceError(f"the successor exited with {new.returncode} before the "
                                   f"old server (pid {old.pid}) left: {self.log_tail()}")
            if time.monotonic() > deadline:
                raise InPlaceError(f"the old server (pid {old.pid}) did not exit within "
                                   f"{timeout:g} s of the handover: {self.log_tail()}")
            time.sleep(0.01)

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
            for pgid in self.groups:
                _end_group(pgid, grace, notes)
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


def _end_group(pgid: int, grace: float, notes: list[str]) -> None:
    """What a server started beside its serving process (an fd keeper asked to quit by the
    last server) ends by itself after the unmount; what does not is ended, by its group."""
    killed = process.stop_group(pgid, grace)
    if killed:
        notes.append(f"processes {killed} of server group {pgid} left running; SIGKILL")
