"""Reference-server processes without a Python start each.

Every lab of a reference profile runs a server process, and a restart in place runs more
(the fd holder, a successor). Started as ``python -m``, each pays the interpreter's start
and the package's imports: 0.1 s on the host, seconds in a TCG guest. Instead, one spawner
per controlling process imports the package once and forks each of them from that state.

The spawner forks twice, so each process it makes is re-parented to the controlling
process, which marks itself a child subreaper for that: the controller then waits for its
servers as for its own children (exit status included), and ``Child`` gives them the
``subprocess.Popen`` interface the rest of the code uses. The spawner ends with its
controller (PR_SET_PDEATHSIG), or at ``stop()``.

    python -m nfsconf.fuse.spawner SOCKET --ready-fd N     (started by ``spawn``)
"""

from __future__ import annotations

import argparse
import atexit
import ctypes
import gc
import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
from typing import Any

from .. import process

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
FD_PLACEHOLDER = "{ready-fd}"  # in argv: the ready fd's number in the child
_MODULES = ("server", "holder")


class SpawnError(RuntimeError):
    pass


class NoSubreaper(SpawnError):
    """This kernel lets no process adopt its orphans (PR_SET_CHILD_SUBREAPER)."""


class Child:
    """A process the spawner made, now a child of this process: Popen's poll, wait, signals
    and returncode."""

    def __init__(self, pid: int, args: list[str]) -> None:
        self.pid = pid
        self.args = args
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                self.returncode = -1  # reaped elsewhere: gone all the same
                return self.returncode
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.poll() is not None:
            return self.returncode  # type: ignore[return-value]
        if timeout is None:
            _, status = os.waitpid(self.pid, 0)
            self.returncode = os.waitstatus_to_exitcode(status)
            return self.returncode
        fd = os.pidfd_open(self.pid)
        try:
            ready, _, _ = select.select([fd], [], [], timeout)
        finally:
            os.close(fd)
        if not ready or self.poll() is None:
            raise subprocess.TimeoutExpired(self.args, timeout)
        return self.returncode  # type: ignore[return-value]

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:  # unreaped, the pid cannot have been reused
            os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


# --- the controlling side ----------------------------------------------------------------
_proc: subprocess.Popen[bytes] | None = None
_sock_dir: str | None = None


def _prctl(option: int, value: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(option, value, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), f"prctl({option})")


START_TIMEOUT = 60.0


def _socket_path() -> str:
    assert _sock_dir is not None
    return os.path.join(_sock_dir, "spawner.sock")


def _start(env: dict[str, str], timeout: float) -> None:
    global _proc, _sock_dir
    try:
        _prctl(_PR_SET_CHILD_SUBREAPER, 1)
    except OSError as e:
        raise NoSubreaper(str(e)) from e
    # a socket's path has at most 107 bytes; a deep TMPDIR (pytest's tmp_path) has more
    deep = len(tempfile.gettempdir()) > 60
    _sock_dir = tempfile.mkdtemp(prefix="nfsconf-spawner-", dir="/tmp" if deep else None)
    rfd, wfd = os.pipe()
    try:
        _proc = subprocess.Popen(
            [sys.executable, "-m", "nfsconf.fuse.spawner", _socket_path(),
             "--ready-fd", str(wfd)], pass_fds=(wfd,), env=env, start_new_session=True,
            stdin=subprocess.DEVNULL)
        os.close(wfd)
        wfd = -1
        ready, _, _ = select.select([rfd], [], [], timeout)
        said = os.read(rfd, 16) if ready else None
        if said != b"ready\n":
            status = _proc.poll()
            stop()
            raise SpawnError(f"the spawner did not start within {timeout:g} s" if said is None
                             else f"the spawner exited (status {status}) before it was ready")
    finally:
        os.close(rfd)
        if wfd >= 0:
            os.close(wfd)
    atexit.register(stop)


def spawn(module: str, argv: list[str], *, log_fd: int, ready_fd: int, env: dict[str, str],
          timeout: float) -> Child:
    """Fork MODULE ("server": python -m nfsconf.fuse, "holder": python -m
    nfsconf.fuse.holder) with ARGV, stdout and stderr on LOG_FD, READY_FD passed on (its
    number in the child replaces "{ready-fd}" in ARGV), in a session of its own."""
    if _proc is None or _proc.poll() is not None:
        # once per process, and the first Python start-up on a loaded machine (a VM beside
        # it under TCG) is slow: more time than one server's start gets
        _start(env, max(timeout, START_TIMEOUT))
    request = json.dumps({"module": module, "argv": argv, "cwd": os.getcwd()}).encode()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(_socket_path())
        socket.send_fds(s, [request], [log_fd, ready_fd])
        answer = b""
        while not answer.endswith(b"\n"):
            chunk = s.recv(4096)
            if not chunk:
                raise SpawnError(f"the spawner closed the connection ({answer!r})")
            answer += chunk
    reply = json.loads(answer)
    if "pid" not in reply:
        raise SpawnError(f"the spawner could not fork: {reply.get('error')}")
    return Child(reply["pid"], ["python", "-m", "nfsconf.fuse", *argv])


def running() -> bool:
    return _proc is not None and _proc.poll() is None


def stop() -> None:
    """End the spawner (the processes it made live on: they belong to their owners)."""
    global _proc, _sock_dir
    if _proc is not None:
        process.stop(_proc, grace=5)  # stuck past that: it holds nothing needing a clean end
        _proc = None
    if _sock_dir is not None:
        for name in os.listdir(_sock_dir):
            os.unlink(os.path.join(_sock_dir, name))
        os.rmdir(_sock_dir)
        _sock_dir = None


# --- the spawner ----------------------------------------------------------------------
def _entry(module: str) -> Any:
    if module == "holder":
        from . import holder

        return holder.main
    from . import __main__ as server

    return server.main


def _child(conn: socket.socket, listener: socket.socket, module: str, argv: list[str],
           cwd: str, log_fd: int, ready_fd: int) -> None:
    """In the grandchild: become the server or holder, as `python -m` would have."""
    code = 1
    try:
        conn.close()
        listener.close()
        os.setsid()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        os.close(log_fd)
        os.chdir(cwd)
        args = [str(ready_fd) if a == FD_PLACEHOLDER else a for a in argv]
        sys.argv = [module, *args]
        code = _entry(module)(args)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    except BaseException as e:  # a bug must show in the server's log, not vanish
        print(f"nfsconf spawner: {module} raised {type(e).__name__}: {e}", file=sys.stderr)
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _serve_one(conn: socket.socket, listener: socket.socket) -> None:
    data, fds, _, _ = socket.recv_fds(conn, 65536, 4)
    try:
        req = json.loads(data)
        if req.get("module") not in _MODULES or len(fds) != 2:
            raise ValueError(f"bad request: {req!r} with {len(fds)} fds")
        rpipe, wpipe = os.pipe()
        middle = os.fork()
        if middle == 0:  # leaves at once, so its child is re-parented to the controller
            os.close(rpipe)
            pid = os.fork()
            if pid == 0:
                os.close(wpipe)
                _child(conn, listener, req["module"], req["argv"], req["cwd"], *fds)
            os.write(wpipe, f"{pid}\n".encode())
            os._exit(0)
        os.close(wpipe)
        with os.fdopen(rpipe, "rb") as r:
            line = r.readline()
        os.waitpid(middle, 0)
        conn.sendall(json.dumps({"pid": int(line)}).encode() + b"\n")
    except (ValueError, OSError) as e:
        conn.sendall(json.dumps({"error": str(e)}).encode() + b"\n")
    finally:
        for fd in fds:
            os.close(fd)


def _warm() -> None:
    """First steps every child would otherwise take on its own, done once here for all: the
    server's argument parser, built and used (argparse compiles its regular expressions
    then, and re caches them per process): about 14 ms of a server's start in a User-Mode
    Linux guest."""
    from . import __main__ as server

    server.parser().parse_args(["source", "mountpoint"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m nfsconf.fuse.spawner", description=__doc__)
    ap.add_argument("socket")
    ap.add_argument("--ready-fd", type=int, required=True)
    args = ap.parse_args(argv)
    _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)  # never outlive the controller
    if os.getppid() == 1:
        return 0  # it is gone already
    _entry("server")  # the imports every child would otherwise make
    _entry("holder")
    _warm()
    # every child's collector would walk (and so copy) the objects the imports made: a page
    # copied costs a User-Mode Linux guest a fault into its kernel
    gc.freeze()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal ^C is the controller's
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(args.socket)
        listener.listen(16)
        os.write(args.ready_fd, b"ready\n")
        os.close(args.ready_fd)
        while True:
            conn, _ = listener.accept()
            with conn:
                _serve_one(conn, listener)


if __name__ == "__main__":
    sys.exit(main())
