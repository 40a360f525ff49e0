"""What the kernel shows of a restart without unmount, checked rather than believed.

A profile's [restart] command (or the reference server's own handover) says it restarted
the server in place; the kernel is asked instead:

- the mount is the same: mountinfo shows the same mount ID on the mountpoint, with the same
  device, whose minor is the FUSE connection (fusectl's N): no unmount, no new connection;
- the old serving process is gone (exited after a handover, reaped after the SIGKILL);
- the successor serves: while its process group is stopped (SIGSTOP) a LOOKUP of a name
  nobody asked for before stays unanswered (for twenty times what a LOOKUP takes with the
  group running), and it is answered once the group continues.
  A restart that left the old server (or anyone else) serving passes the first LOOKUP at
  once and is caught.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import signal
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from nfsconf.mounttable import MountEntry, fuse_mount_at, wait_idle


class InPlaceError(RuntimeError):
    """The restart did not happen as the kernel sees it; the message says what differs."""


@dataclass(frozen=True)
class InPlaceRestart:
    """One restart without unmount, as the kernel showed it (cell evidence)."""

    how: str  # handover | sigkill
    old_pid: int
    new_pid: int
    mount_id: int
    connection: int
    seconds: float
    stopped_lookup_waited: float  # how long a LOOKUP stayed unanswered with the successor stopped

    def evidence(self) -> dict[str, Any]:
        return asdict(self)


class Lookup:
    """A LOOKUP of a fresh name under MNT in a thread of its own: it may block on a server
    that is not there. Any answer (ENOENT, as expected, or another errno) means someone read
    the request and replied; ENOTCONN means the connection is dead."""

    def __init__(self, mnt: Path) -> None:
        self.path = mnt / f".nfsconf-inplace-{secrets.token_hex(6)}"
        self.errno: int | None = None
        self.done = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        try:
            os.stat(self.path)
            self.errno = 0
        except OSError as e:
            self.errno = e.errno
        self.done.set()

    def answered(self, timeout: float) -> bool:
        return self.done.wait(timeout)


def same_mount(before: MountEntry, mnt: Path) -> MountEntry:
    """The mount on MNT is BEFORE's: same mount ID, same connection."""
    now = fuse_mount_at(mnt)
    if now is None:
        raise InPlaceError(f"{mnt} is no longer mounted after the restart (mount ID "
                           f"{before.mount_id} gone): that is an unmount, not a restart in place")
    if (now.mount_id, now.dev) != (before.mount_id, before.dev):
        raise InPlaceError(f"the mount on {mnt} changed: mount ID {before.mount_id} -> "
                           f"{now.mount_id}, device {before.dev} -> {now.dev} (a new FUSE "
                           "connection): the restart unmounted and mounted again")
    return now


def wait_answering(mnt: Path, timeout: float) -> None:
    """Someone answers requests on MNT again within TIMEOUT."""
    probe = Lookup(mnt)
    if not probe.answered(timeout):
        raise InPlaceError(f"nobody answered a LOOKUP on {mnt} within {timeout:g} s after the "
                           "restart: the successor does not serve the connection")
    if probe.errno == errno.ENOTCONN:  # the connection was aborted, the fd lost
        raise InPlaceError(f"a LOOKUP on {mnt} after the restart got ENOTCONN: the FUSE "
                           "connection died with the old server")


def served_by(pid: int, entry: MountEntry, mnt: Path, timeout: float) -> float:
    """PID's process group answers the connection of ENTRY: a LOOKUP sent while the group is
    stopped is not answered (for a hold of twenty times what a LOOKUP took with the group
    running, 50 ms to 300 ms: another server would answer about as fast as this one), and
    is once the group continues. Returns how long it waited unanswered."""
    pgid = os.getpgid(pid)
    wait_idle(entry.connection, timeout)  # nothing of the restart itself still in flight
    started = time.monotonic()
    wait_answering(mnt, timeout)  # answered: that LOOKUP is over, nothing new in flight
    hold = min(0.3, max(0.05, 20 * (time.monotonic() - started)))
    os.killpg(pgid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        probe = Lookup(mnt)
        if probe.answered(hold):
            raise InPlaceError(
                f"with the successor (pid {pid}, process group {pgid}) stopped, a LOOKUP on "
                f"{mnt} was still answered: another process serves the connection")
        waited = time.monotonic() - started
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGCONT)
    if not probe.answered(timeout):
        raise InPlaceError(f"the successor (pid {pid}) did not answer a LOOKUP on {mnt} "
                           f"within {timeout:g} s once continued")
    return waited
