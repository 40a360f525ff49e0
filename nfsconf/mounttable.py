"""The kernel's mount table and FUSE connections as the suite needs them: mounts (from
/proc/self/mountinfo), umount, the fusectl abort and idle wait, and signals deferred while
a cleanup runs. Standard library only: the reference server (nfsconf/fuse) and the knfsd
guest's set-up (run without site-packages) use it as the rest of the suite does."""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import re
import select
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
    if "\\" not in field:
        return field
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


class MountWatch:
    """Wakes when this process's mount table changes or a watched process exits: poll(2) on
    mountinfo (POLLPRI) and on pidfds, instead of re-reading the table on a timer. Open it
    before starting what will mount, so no change can slip in between."""

    def __init__(self) -> None:
        self._table = open("/proc/self/mountinfo", "rb")
        self._poll = select.poll()
        self._poll.register(self._table, select.POLLPRI | select.POLLERR)
        self._pidfds: list[int] = []

    def watch_exit(self, pid: int) -> None:
        try:
            fd = os.pidfd_open(pid)
        except OSError:
            return  # gone already: the caller's own check of the process says so
        self._pidfds.append(fd)
        self._poll.register(fd, select.POLLIN)

    def wait(self, timeout: float) -> None:
        """Until the table changed, a watched process exited, or TIMEOUT seconds."""
        self._poll.poll(max(0, int(timeout * 1000)))

    def close(self) -> None:
        self._table.close()
        for fd in self._pidfds:
            os.close(fd)
        self._pidfds.clear()

    def __enter__(self) -> MountWatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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
