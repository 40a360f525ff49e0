"""Starting a FUSE server in the foreground and taking its mount down again, whatever state
the server is in (running, crashed, stopped, hung)."""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import re
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

MNT_DETACH = 2
_libc = ctypes.CDLL(None, use_errno=True)


class MountError(RuntimeError):
    """A server that would not mount; the message carries its own words (stderr tail)."""


@dataclass(frozen=True)
class MountEntry:
    mount_id: int
    dev: str  # "major:minor"; the minor is the fusectl connection number
    mountpoint: str
    fstype: str
    source: str
    options: str = ""  # the filesystem's own options (user_id=, allow_other, ...)

    @property
    def is_fuse(self) -> bool:
        """fuse, fuse.<subtype> or fuseblk; not fusectl, the control filesystem."""
        return self.fstype in ("fuse", "fuseblk") or self.fstype.startswith("fuse.")

    @property
    def connection(self) -> int:
        return int(self.dev.split(":")[1])


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo octal
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mounts() -> list[MountEntry]:
    entries = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            parts, rparts = left.split(), right.split()
            entries.append(MountEntry(int(parts[0]), parts[2], _unescape(parts[4]),
                                      rparts[0], _unescape(rparts[1]),
                                      rparts[2] if len(rparts) > 2 else ""))
    return entries


def mounts_at(mountpoint: str | os.PathLike[str]) -> list[MountEntry]:
    """Every mount stacked on MOUNTPOINT, oldest first. Reads only mountinfo: a path lookup
    on a mount whose server hangs would hang too."""
    path = os.path.abspath(mountpoint)
    return [m for m in mounts() if m.mountpoint == path]


def is_mountpoint(path: str | os.PathLike[str]) -> bool:
    return bool(mounts_at(path))


def fuse_mount_at(mountpoint: str | os.PathLike[str]) -> MountEntry | None:
    """The topmost FUSE mount on MOUNTPOINT, if any."""
    found = [m for m in mounts_at(mountpoint) if m.is_fuse]
    return found[-1] if found else None


def umount(path: str | os.PathLike[str], *, lazy: bool = False) -> int:
    """umount2(2); returns 0 or the errno (the caller decides what a failure means)."""
    rc = _libc.umount2(os.fsencode(os.fspath(path)), MNT_DETACH if lazy else 0)
    return 0 if rc == 0 else ctypes.get_errno()


_private_fusectl: str | None = None


def fusectl_dir() -> Path | None:
    """Where the fusectl files are: the system's /sys/fs/fuse/connections when it is mounted,
    else a private mount of fusectl made once and taken down at exit (the system's view is
    left as it was)."""
    global _private_fusectl
    for m in mounts():
        if m.fstype == "fusectl":
            return Path(m.mountpoint)
    if _private_fusectl is None:
        # not under TMPDIR: a run may put its labs on a filesystem it unmounts afterwards
        ctl = tempfile.mkdtemp(prefix="nfsconf-fusectl-",
                               dir="/run" if os.path.isdir("/run") else None)
        if subprocess.run(["mount", "-t", "fusectl", "none", ctl],
                          capture_output=True).returncode != 0:
            os.rmdir(ctl)
            return None
        _private_fusectl = ctl
        atexit.register(release_fusectl)
    return Path(_private_fusectl)


def release_fusectl() -> None:
    """Take down the private fusectl mount, if this process made one."""
    global _private_fusectl
    if _private_fusectl is not None:
        umount(_private_fusectl, lazy=True)
        with contextlib.suppress(OSError):
            os.rmdir(_private_fusectl)
        _private_fusectl = None


def abort_connection(connection: int) -> bool:
    """Write to fusectl's N/abort: every pending and future request fails with ENOTCONN, so
    nothing waits on a dead or stopped server any more."""
    ctl = fusectl_dir()
    abort = ctl / str(connection) / "abort" if ctl else None
    if abort is None or not abort.exists():
        return False
    abort.write_text("1")
    return True


def wait_idle(connection: int, timeout: float = 2.0) -> int:
    """Wait until the connection has no request in flight (fusectl's N/waiting is 0) and
    return what is still waiting. A just-closed file keeps its inode pinned until the
    server answers RELEASE; dropping caches before that leaves the inode cached."""
    ctl = fusectl_dir()
    waiting = ctl / str(connection) / "waiting" if ctl else None
    deadline = time.monotonic() + timeout
    count = 0
    while waiting is not None:
        try:
            count = int(waiting.read_text())
        except (OSError, ValueError):
            return 0
        if count == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.002)
    return count


@contextlib.contextmanager
def deferred_signals() -> Iterator[None]:
    """Let a cleanup finish whatever arrives: a second Ctrl-C or SIGTERM during an unmount
    would otherwise leave the mount behind. The interrupt is raised once the cleanup is
    done. Only the main thread can hold signals; elsewhere this does nothing."""
    global _deferring
    if _deferring or threading.current_thread() is not threading.main_thread():
        yield  # an outer cleanup already holds them
        return
    caught: list[int] = []
    previous = {sig: signal.signal(sig, lambda s, _f: caught.append(s))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    _deferring = True
    try:
        yield
    finally:
        _deferring = False
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if caught:
        raise KeyboardInterrupt(f"signal {caught[0]} during cleanup")


_deferring = False


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
