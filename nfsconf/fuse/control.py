"""Drive the reference server from Python: start, restart in place, kill, stop.

    srv = RefServer().start(src, mnt, nodeid="stable")
    srv.live_restart()        # graceful: old server leaves, successor continues the connection
    srv.kill_and_takeover()   # SIGKILL, successor takes the fd from the holder
    srv.stop()                # never leaves a mount or a process behind

A restart in place runs with a holder process that owns a duplicate of the /dev/fuse fd, so
the connection survives the server. The holder starts with the first restart (or ``kill``),
not with the mount: most mounts are never restarted, and in a User-Mode Linux guest a
holder's start was a third of a mount's time. Until then the first server's ready line says
which fd it serves and what INIT settled, and the holder gets a duplicate of that fd taken
from the live server (pidfd_getfd). All instances append to one trace file (``trace_path``).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .. import process
from . import holder as hd
from . import spawner
from . import sysutil as su

_PKG_PARENT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_compiled = False
_spawner_ok = True
Process = subprocess.Popen[bytes] | spawner.Child


def ensure_bytecode() -> None:
    """Byte-compile the nfsconf package once per process, whatever PYTHONDONTWRITEBYTECODE
    says: every lab starts two Python processes of it, and without bytecode each compiles
    every module again (40 ms on the host; seconds in a TCG guest). Up to date, it costs a
    stat per file. A read-only tree is left as it is."""
    global _compiled
    if _compiled:
        return
    _compiled = True
    import compileall

    compileall.compile_dir(os.path.join(_PKG_PARENT, "nfsconf"), quiet=2)
_KNOBS = ("nodeid", "generation", "export", "forget", "handle_size", "hostile", "timeout",
          "fsname", "subtype", "lookup_handle", "state_dir", "stall_first", "fault",
          "handle_size_by_name", "handle_salt", "proto_minor", "journal")


class RefServerError(RuntimeError):
    """The reference server failed to start, restart or stop; the message says why."""


@dataclass
class RefServer:
    """One mount of the reference server and every process behind it."""

    workdir: str | None = None
    trace: bool = True
    start_timeout: float = 15.0
    source: str = ""
    mountpoint: str = ""
    knobs: dict[str, Any] = field(default_factory=dict)
    proc: Process | None = None
    holder: Process | None = None
    pids: list[int] = field(default_factory=list)  # every server instance, in order
    # what the first server's ready line said: its /dev/fuse fd and the holder's params
    deposit: dict[str, Any] | None = None

    # --- public API ------------------------------------------------------------------
    def start(self, source: str, mountpoint: str, **knobs: Any) -> RefServer:
        """Mount ``source`` on ``mountpoint``. Knobs: nodeid, generation, export, forget,
        handle_size, hostile, timeout, fsname, subtype, lookup_handle, state_dir,
        stall_first (test hook, first instance only)."""
        bad = set(knobs) - set(_KNOBS)
        if bad:
            raise ValueError(f"unknown knob(s) {sorted(bad)}; known: {_KNOBS}")
        if self.proc is not None:
            raise RefServerError("already started")
        if not os.path.isdir(source):
            raise ValueError(f"source {source!r} is not a directory")
        if not os.path.isdir(mountpoint):
            raise ValueError(f"mountpoint {mountpoint!r} is not a directory")
        if su.is_mountpoint(mountpoint):
            raise ValueError(f"{mountpoint} is already a mount point; refusing to stack on it")
        self.source = os.path.realpath(source)
        self.mountpoint = os.path.realpath(mountpoint)
        self.knobs = dict(knobs)
        if self.workdir is None:
            self.workdir = tempfile.mkdtemp(prefix="nfsconf-ref-")
        os.makedirs(self.workdir, exist_ok=True)
        try:
            self._spawn(takeover=False, knobs=self.knobs)
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def trace_path(self) -> str | None:
        return os.path.join(self.workdir, "trace.jsonl") if self.trace and self.workdir else None

    @property
    def socket_path(self) -> str:
        assert self.workdir is not None
        return os.path.join(self.workdir, "holder.sock")

    @property
    def log_path(self) -> str:
        assert self.workdir is not None
        return os.path.join(self.workdir, "server.log")

    def live_restart(self, **overrides: Any) -> int:
        """Graceful handover: the old server finishes its request, leaves its node table with
        the holder and exits; a successor takes the connection. Returns the new pid."""
        old = self._require_proc()
        return self._successor(overrides, lambda: self._handover(old))

    def kill_and_takeover(self, **overrides: Any) -> int:
        """SIGKILL the server; a successor takes the fd from the holder. Returns the new pid."""
        return self._successor(overrides, self.kill)

    def kill(self) -> None:
        """SIGKILL the current server and reap it (the mount stays, held by the holder)."""
        proc = self._require_proc()
        if proc.poll() is None:
            self._ensure_holder()
            proc.kill()
        proc.wait()

    def mount_entry(self) -> su.MountEntry | None:
        fstype = f"fuse.{self.knobs.get('subtype', 'nfsconf-ref')}"
        found = [m for m in su.mounts_at(self.mountpoint) if m.fstype == fstype]
        return found[-1] if found else None

    def stop(self) -> None:
        """Unmount and end every process; safe to call twice and after any failure."""
        errors: list[str] = []
        if self.proc is not None:
            process.stop(self.proc, grace=5)  # the server unmounts on SIGTERM
        if self.mountpoint:
            for _ in range(8):  # stacked mounts from repeated failures: peel them all
                m = self.mount_entry()
                if m is None:
                    break
                su.abort_connection(m.connection)
                try:
                    su.umount2(self.mountpoint, su.MNT_DETACH)
                except OSError as e:
                    errors.append(f"umount -l {self.mountpoint}: {e}")
                    break
        if self.holder is not None:
            if self.holder.poll() is None:
                with contextlib.suppress(hd.HolderError, OSError):
                    hd.request(self.socket_path, {"cmd": "quit"}, timeout=2)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.holder.wait(timeout=3)  # asked to quit: given the time to
                process.stop(self.holder, grace=3)
            self.holder = None
        if self.mountpoint and self.mount_entry() is not None:
            errors.append(f"{self.mountpoint} is still mounted")
        if errors:
            raise RefServerError("; ".join(errors))

    def __enter__(self) -> RefServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- internals -------------------------------------------------------------------
    def _require_proc(self) -> Process:
        if self.proc is None:
            raise RefServerError("not started")
        return self.proc

    def _env(self) -> dict[str, str]:
        ensure_bytecode()
        env = dict(os.environ)
        env["PYTHONPATH"] = _PKG_PARENT + (os.pathsep + env["PYTHONPATH"]
                                           if env.get("PYTHONPATH") else "")
        return env

    def _wait_ready(self, proc: Process, rfd: int, what: str) -> bytes:
        """Wait for PROC's ready line on RFD; returns what follows "ready" on it."""
        deadline = time.monotonic() + self.start_timeout
        said = b""
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    proc.kill()
                    proc.wait()
                    raise RefServerError(f"{what} not ready after {self.start_timeout}s: "
                                         f"{self._log_tail()}")
                ready, _, _ = select.select([rfd], [], [], min(left, 0.2))
                if ready:
                    chunk = os.read(rfd, 65536)
                    said += chunk
                    if chunk and not said.endswith(b"\n"):
                        continue  # a long line may come in pieces
                    if said.startswith(b"ready") and said.endswith(b"\n"):
                        return said[len(b"ready"):].strip()
                    proc.wait(timeout=5)  # end of file, or another word: it is exiting
                    raise RefServerError(f"{what} exited {proc.returncode}: {self._log_tail()}")
                if proc.poll() is not None:
                    raise RefServerError(f"{what} exited {proc.returncode}: {self._log_tail()}")
        finally:
            os.close(rfd)

    def _ensure_holder(self) -> None:
        """A holder with the connection's fd before anything restarts the server: started
        now, with a duplicate of the fd the live first server named in its ready line."""
        if self.holder is not None:
            return
        proc = self._require_proc()
        if self.deposit is None or proc.poll() is not None:
            # its fd closed with it: the connection is gone, no successor can continue it
            raise RefServerError(f"server {proc.pid} exited before a holder took its "
                                 f"/dev/fuse fd: {self._log_tail()}")
        pidfd = os.pidfd_open(proc.pid)  # unreaped, so the pid is still this server's
        try:
            fd = su.pidfd_getfd(pidfd, self.deposit["fd"])
        finally:
            os.close(pidfd)
        try:
            self._start_holder()
            hd.request(self.socket_path, {"cmd": "put", "params": self.deposit["params"]}, [fd])
        finally:
            os.close(fd)

    def _start_holder(self) -> None:
        rfd, wfd = os.pipe()
        try:
            self.holder = self._process("holder", [self.socket_path, "--ready-fd"], wfd)
        finally:
            os.close(wfd)
        self._wait_ready(self.holder, rfd, "fd holder")

    def _process(self, module: str, argv: list[str], wfd: int) -> Process:
        """A server or holder process with ARGV then the number of WFD (its ready fd),
        output to the log, in a session of its own: forked by the spawner, or, where this
        kernel lets no process adopt its grandchildren, started with `python -m`."""
        global _spawner_ok
        with open(self.log_path, "ab") as log:
            if _spawner_ok:
                try:
                    return spawner.spawn(module, [*argv, spawner.FD_PLACEHOLDER],
                                         log_fd=log.fileno(), ready_fd=wfd, env=self._env(),
                                         timeout=self.start_timeout)
                except spawner.NoSubreaper:
                    _spawner_ok = False
            mod = "nfsconf.fuse" if module == "server" else "nfsconf.fuse.holder"
            return subprocess.Popen([sys.executable, "-m", mod, *argv, str(wfd)],
                                    pass_fds=(wfd,), stdout=log, stderr=log, env=self._env(),
                                    start_new_session=True)

    def _args(self, knobs: dict[str, Any]) -> list[str]:
        args: list[str] = []
        for k in _KNOBS:
            v = knobs.get(k)
            if v is True:  # a switch
                args.append(f"--{k.replace('_', '-')}")
            elif v is not None and v is not False:
                args += [f"--{k.replace('_', '-')}", str(v)]
        if self.trace_path:
            args += ["--trace", self.trace_path]
        return args

    def _popen(self, takeover: bool, knobs: dict[str, Any]) -> tuple[Process, int]:
        rfd, wfd = os.pipe()
        mode = ["--takeover", self.socket_path, "--wait-release"] if takeover else \
            ["--holder", self.socket_path, "--late-holder"]
        try:
            proc = self._process("server", [self.source, self.mountpoint, *self._args(knobs),
                                            *mode, "--ready-fd"], wfd)
        finally:
            os.close(wfd)
        return proc, rfd

    def _spawn(self, takeover: bool, knobs: dict[str, Any]) -> int:
        proc, rfd = self._popen(takeover, knobs)
        self.proc = proc
        self.pids.append(proc.pid)
        said = self._wait_ready(proc, rfd, "successor" if takeover else "server")
        if not takeover:
            self.deposit = json.loads(said)
        return proc.pid

    def _handover(self, old: Process) -> None:
        if old.poll() is None:
            old.send_signal(signal.SIGUSR1)
            try:
                old.wait(timeout=10)
            except subprocess.TimeoutExpired:
                old.kill()
                old.wait()
                raise RefServerError("old server ignored the handover signal; killed") from None
        if old.returncode != 0:
            raise RefServerError(f"old server exited {old.returncode} on handover: "
                                 f"{self._log_tail()}")

    def _successor(self, overrides: dict[str, Any], end_old: Callable[[], None]) -> int:
        """Start the successor first, then end the old server, then release the fd to it.

        Order matters: a fork while nobody serves the mount can block the forking process
        (its child closes inherited fds of the mount, which sends FLUSH)."""
        bad = set(overrides) - set(_KNOBS)
        if bad:
            raise ValueError(f"unknown knob(s) {sorted(bad)}")
        self._require_proc()
        self._ensure_holder()  # the successor asks it for the fd
        knobs = {k: v for k, v in self.knobs.items() if k != "stall_first"}
        knobs.update(overrides)
        proc, rfd = self._popen(takeover=True, knobs=knobs)
        try:
            end_old()
            hd.request(self.socket_path, {"cmd": "release"})
        except BaseException:
            proc.kill()
            proc.wait()
            os.close(rfd)
            raise
        self.proc = proc
        self.pids.append(proc.pid)
        self._wait_ready(proc, rfd, "successor")
        return proc.pid

    def _log_tail(self, n: int = 2000) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - n))
                return f.read().decode(errors="replace").strip()
        except OSError:
            return "(no log)"

