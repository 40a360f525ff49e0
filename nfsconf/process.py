"""Every process the suite starts is run or ended here: `checked` runs a command to its end
and raises the caller's own error with the end of its output; `stop` ends one child
(SIGTERM, SIGKILL after a grace); `ProcessTree` supervises a tree started in its own
session, every descendant remembered, stopped as a whole — none may outlive its supervisor.
`checked` and `stop` use the standard library only: knfsd's set-up runs in guests started
without site-packages (`python -S`).

A kernel engine is a tree of host processes (vng -> virtme-run -> qemu; User-Mode Linux
forks a host process per guest process), and a child that leaves the process group still
has to end. Descendants are remembered by (PID, start time) while they are seen, so a
reused PID is never signalled.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import psutil

POLL = 0.1


class CommandError(RuntimeError):
    """A command that failed, when the caller has no error type of its own."""


def checked(argv: Sequence[str], *, what: str | None = None,
            error: Callable[[str], Exception] = CommandError, timeout: float | None = None,
            cwd: Path | None = None, env: Mapping[str, str] | None = None,
            input: str | None = None, hint: str = "") -> str:
    """Run ARGV to its end and return its output (stdout then stderr); a missing command, a
    time limit passed or a non-zero exit raise ERROR(message), the message naming WHAT (the
    command line by default), the exit status and the end of the output. HINT follows a
    missing command (which package to install)."""
    what = what or " ".join(argv)
    try:
        p = subprocess.run(list(argv), cwd=cwd, env=dict(env) if env is not None else None,
                           input=input, stdin=None if input is not None else subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise error(f"{what}: command {argv[0]!r} not found{hint}") from None
    except subprocess.TimeoutExpired:
        raise error(f"{what}: timed out after {timeout:g} s") from None
    out = (p.stdout + p.stderr).strip()
    if p.returncode != 0:
        raise error(f"{what} failed (exit {p.returncode}): {out[-2000:]}")
    return out


class Stoppable(Protocol):
    """What `stop` needs of a child: Popen's interface (the FUSE spawner's children too)."""

    def poll(self) -> int | None: ...
    def terminate(self) -> None: ...
    def kill(self) -> None: ...
    def wait(self, timeout: float | None = None) -> int: ...


def stop(p: Stoppable, grace: float = 5.0) -> int | None:
    """End one child: SIGTERM, SIGKILL when it is still there after GRACE seconds. Returns
    its exit status (None: it survived SIGKILL too, stuck in the kernel)."""
    if p.poll() is not None:
        return p.poll()
    for end in (p.terminate, p.kill):
        try:
            end()
        except ProcessLookupError:
            pass
        try:
            return p.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            continue
    return None


BUSY = ("R", "D")  # running, or in an uninterruptible wait: not yet done with its work


def stat_of(path: str) -> tuple[str, list[str]] | None:
    """The command name and the fields after it of a /proc .../stat file; None once gone."""
    try:
        with open(path) as f:
            head, _, tail = f.read().rpartition(")")
    except OSError:
        return None
    fields = tail.split()
    return (head.partition("(")[2], fields) if fields else None


def state(pid: int, tid: int | None = None) -> str | None:
    """PID's (or its thread TID's) state letter from /proc (R, S, T, Z, ...); None when
    there is no such process."""
    st = stat_of(f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat")
    return st[1][0] if st else None


def running(pid: int) -> bool:
    """PID has not exited: a zombie (ours, not yet reaped) serves nothing."""
    return state(pid) not in (None, "Z", "X")


def group_members(pgid: int) -> list[int]:
    """The live (not zombie) processes of process group PGID."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return []  # no process at all: one call instead of reading every /proc/N/stat
    except PermissionError:
        pass
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        st = stat_of(f"/proc/{entry}/stat")
        fields = st[1] if st else []
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            found.append(int(entry))
    return found


def busy_threads(pid: int) -> list[int]:
    """PID's threads caught running (R) or in an uninterruptible wait (D): a server whose
    threads all sleep has finished whatever it had read."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    return [int(tid) for tid in tids if state(pid, int(tid)) in BUSY]


def wait_quiet(pid: int, timeout: float) -> list[int]:
    """Wait until no thread of PID is busy; returns the threads still busy at TIMEOUT."""
    deadline = time.monotonic() + timeout
    while (busy := busy_threads(pid)) and time.monotonic() < deadline:
        time.sleep(0.001)
    return busy


def stop_group(pgid: int, grace: float) -> list[int]:
    """Give process group PGID GRACE seconds to end by itself (reaping what is ours), then
    SIGKILL it. Returns the processes that were still there and killed."""
    def reap() -> None:
        with contextlib.suppress(ChildProcessError):  # ours by re-parenting to a subreaper
            while os.waitpid(-pgid, os.WNOHANG)[0]:
                pass

    deadline = time.monotonic() + grace
    while True:
        reap()
        members = group_members(pgid)
        if not members or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    if members:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        reap()
    return members


# A supervisor killed outright (SIGKILL, the OOM killer) cannot stop a tree in a session
# of its own: the kernel sends its root SIGTERM instead (prctl PR_SET_PDEATHSIG), when the
# thread that started it ends, so a tree is started by the thread that supervises it.
# setpriv (util-linux, Essential), not preexec_fn: the supervisors run in threads.
DIE_WITH_PARENT = ("setpriv", "--pdeathsig", "TERM", "--")


class ProcessTreeError(RuntimeError):
    """Processes of the tree survived SIGKILL (stuck in the kernel)."""


class ProcessTree:
    def __init__(self, argv: Sequence[str], *, stdout: IO[bytes] | int | None = None,
                 stderr: IO[bytes] | int | None = None, cwd: Path | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen([*DIE_WITH_PARENT, *argv], stdin=subprocess.DEVNULL,
                                     stdout=stdout, stderr=stderr, cwd=cwd, env=env,
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
        import psutil

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
        import psutil

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
    import psutil

    try:
        p.send_signal(sig)
    except psutil.NoSuchProcess:
        pass
