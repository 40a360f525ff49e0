"""What knfsd still holds of the objects it served, and waiting until it lets go. A
dentry or file nfsd holds pins its FUSE inode, so whether a decode after drop_caches is
cold, or finds a removed file gone, must not depend on when an nfsd thread runs. Three
facts of the kernel make it so unless the suite waits:

- an nfsd thread sends its reply before it releases the request (sunrpc svc_process:
  svc_send, then svc_release_rqst, whose fh_put drops the dentry), so a client holding
  the answer to LOOKUP may drop caches while the looked-up dentry is still referenced;
- the file cache (fs/nfsd/filecache.c) keeps NFSv3 files open between requests, and the
  shrinker that drop_caches runs only rotates an entry used since its last pass;
- every close nfsd decides on by itself (shrinker, its 2 s laundrette, fsnotify after a
  local unlink) is only queued for whichever nfsd thread runs next.

So a knfsd lab first closes what nfsd caches (flushing the fh-key cache purges the file
cache: export.c's expkey_flush, which closes in the writer's own context), then waits
until nothing is queued for close and every nfsd thread sleeps.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

from nfsconf import process

STATS = Path("/proc/fs/nfsd/filecache")
PURGE = Path("/proc/net/rpc/nfsd.fh/flush")
THREADS = Path("/proc/fs/nfsd/threads")
KTHREADD = 2
# a thread releasing a request it answered, or closing a file, is busy (process.BUSY); an
# idle nfsd thread sleeps in svc_recv (I since 6.6, S before), as does one waiting for a
# FUSE server's reply (a hung server holds it there, not busy)


@dataclass(frozen=True)
class FileCacheStats:
    hashed: int  # entries nfsd can still hand out ("total inodes"; 6.1: "total entries")
    allocations: int
    releases: int  # counted as nfsd_file_free starts: the close itself follows

    @property
    def queued(self) -> int:
        """Entries let go of but not yet freed: waiting on the per-net dispose list."""
        return self.allocations - self.releases - self.hashed


def parse_stats(text: str) -> FileCacheStats | None:
    """/proc/fs/nfsd/filecache's counters; None when a field is missing."""
    fields: dict[str, int] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            with contextlib.suppress(ValueError):
                fields[key.strip()] = int(value)
    hashed = fields.get("total inodes", fields.get("total entries"))
    if hashed is None or "allocations" not in fields or "releases" not in fields:
        return None
    return FileCacheStats(hashed, fields["allocations"], fields["releases"])


def read_stats() -> FileCacheStats | None:
    try:
        return parse_stats(STATS.read_text())
    except OSError:
        return None


def nfsd_threads() -> list[int]:
    """The nfsd kernel threads (children of kthreadd named nfsd): a scan of every process,
    ~40 ms under User-Mode Linux, so NfsdRefs keeps what it found."""
    found = []
    for name in os.listdir("/proc"):
        st = process.stat_of(f"/proc/{name}/stat") if name.isdigit() else None
        if st and st[0] == "nfsd" and st[1][1:2] == [str(KTHREADD)]:
            found.append(int(name))
    return found


def thread_count() -> int | None:
    try:
        return int(THREADS.read_text())
    except (OSError, ValueError):
        return None


class NfsdRefs:
    """The guest's one knfsd, as far as its references go: its threads are looked up once
    and again only when their number changes."""

    def __init__(self) -> None:
        self._threads: list[int] = []

    def busy_threads(self) -> list[int]:
        """nfsd threads caught running or in an uninterruptible wait."""
        states = [process.state(pid) for pid in self._threads]
        if len(self._threads) != thread_count() or None in states:
            self._threads = nfsd_threads()
            states = [process.state(pid) for pid in self._threads]
        return [pid for pid, st in zip(self._threads, states, strict=True)
                if st in process.BUSY]

    def settle(self, *, purge: bool = False, timeout: float = 2.0) -> str | None:
        """Wait until every nfsd thread sleeps and nothing waits to be closed (with PURGE:
        first close every file nfsd only caches). Returns what was still pending at
        TIMEOUT, or None."""
        stats = read_stats()  # None: no nfsd mounted, or counters this parser does not know
        if purge and stats is not None and stats.hashed:
            PURGE.write_text("1\n")
        deadline = time.monotonic() + timeout
        while True:
            stats = read_stats()
            queued = stats.queued if stats is not None else 0
            busy = self.busy_threads()
            if queued == 0 and not busy:
                return None
            if time.monotonic() > deadline:
                return (f"nfsd still busy after {timeout:g} s: {queued} file(s) queued "
                        f"for close, thread(s) {busy} running")
            time.sleep(0.001)
