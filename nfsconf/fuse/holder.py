"""A tiny process that keeps a /dev/fuse fd open so the connection outlives its server.

The kernel tears a FUSE connection down when the last fd of its /dev/fuse file is closed.
The server deposits a duplicate here (SCM_RIGHTS over a unix socket) together with what INIT
negotiated; a successor fetches both and serves the same connection without a new INIT, even
if the old server was SIGKILLed. On a graceful handover the old server also leaves its node
table here.

Wire: each message is a 4-byte big-endian length and a JSON object; fds ride along as
SCM_RIGHTS on the first bytes. One request and one answer per connection.
Commands: put (+fd), update, get (answer +fd; with "wait" only after a release), release,
status, quit.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import struct
import sys
from collections.abc import Iterator
from typing import Any

_LEN = struct.Struct(">I")


class HolderError(RuntimeError):
    """The holder refused a request or could not be reached."""


def send_msg(sock: socket.socket, obj: dict[str, Any], fds: list[int] | None = None) -> None:
    data = json.dumps(obj).encode()
    msg = _LEN.pack(len(data)) + data
    if fds:
        sent = socket.send_fds(sock, [msg[:_LEN.size]], fds)
        if sent != _LEN.size:
            raise HolderError("short send of the fd-carrying header")
        sock.sendall(msg[_LEN.size:])
    else:
        sock.sendall(msg)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise HolderError("connection closed mid-message")
        out += chunk
    return bytes(out)


def recv_msg(sock: socket.socket) -> tuple[dict[str, Any], list[int]]:
    head, fds, _flags, _addr = socket.recv_fds(sock, _LEN.size, 4)
    if not head:
        raise HolderError("connection closed before a message")
    if len(head) < _LEN.size:
        head += _recv_exact(sock, _LEN.size - len(head))
    (size,) = _LEN.unpack(head)
    return json.loads(_recv_exact(sock, size)), list(fds)


@contextlib.contextmanager
def _reachable(path: str) -> Iterator[str]:
    """AF_UNIX paths end at 107 bytes; a socket in a deep work directory (a pytest tmp_path,
    a long TMPDIR) is reached through an fd of its directory instead."""
    if len(os.fsencode(path)) < 100:
        yield path
        return
    fd = os.open(os.path.dirname(path) or ".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield f"/proc/self/fd/{fd}/{os.path.basename(path)}"
    finally:
        os.close(fd)


def request(path: str, obj: dict[str, Any], fds: list[int] | None = None,
            timeout: float | None = 10.0) -> tuple[dict[str, Any], list[int]]:
    """Send one command to the holder at ``path``; return (answer, fds received)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            with _reachable(path) as addr:
                s.connect(addr)
        except OSError as e:
            raise HolderError(f"holder at {path} unreachable: {e}") from e
        send_msg(s, obj, fds)
        answer, got = recv_msg(s)
    if not answer.get("ok"):
        for fd in got:
            os.close(fd)
        raise HolderError(f"holder refused {obj.get('cmd')}: {answer.get('error')}")
    return answer, got


class Holder:
    """Holds the fd. A ``get`` with ``wait`` is answered only after a ``release``: the
    successor is started while the old server still runs (forking while nobody serves the
    mount can block the forking process) and proceeds once the old one is gone."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd: int | None = None
        self.params: dict[str, Any] = {}
        self.state: dict[str, Any] | None = None
        self.released = False
        self.waiting: list[socket.socket] = []

    def _hand_out(self) -> tuple[dict[str, Any], list[int]]:
        answer = {"ok": True, "params": self.params, "state": self.state}
        self.state = None  # a state snapshot is good for exactly one successor
        self.released = False
        return answer, [self.fd] if self.fd is not None else []

    def handle(self, msg: dict[str, Any], fds: list[int],
               conn: socket.socket | None = None) -> tuple[dict[str, Any] | None, list[int], bool]:
        """Answer one message; (None, ...) means the answer is deferred (conn kept)."""
        cmd = msg.get("cmd")
        if cmd == "put":
            if len(fds) != 1:
                err = f"put needs exactly one fd, got {len(fds)}"
                return {"ok": False, "error": err}, [], False
            if self.fd is not None:
                os.close(self.fd)
            self.fd = fds.pop()
            self.params = msg.get("params", {})
            self.state = None
            return {"ok": True}, [], False
        for fd in fds:  # nothing else carries fds
            os.close(fd)
        if cmd == "update":
            if "params" in msg:
                self.params = msg["params"]
            if "state" in msg:
                self.state = msg["state"]
            return {"ok": True}, [], False
        if cmd == "get":
            if self.fd is None:
                return {"ok": False, "error": "no fd deposited"}, [], False
            if msg.get("wait") and not self.released:
                if conn is None:
                    return {"ok": False, "error": "cannot wait here"}, [], False
                self.waiting.append(conn)
                return None, [], False
            answer, out = self._hand_out()
            return answer, out, False
        if cmd == "release":
            self.released = True
            return {"ok": True, "waiting": len(self.waiting)}, [], False
        if cmd == "status":
            return {"ok": True, "has_fd": self.fd is not None, "params": self.params,
                    "waiting": len(self.waiting), "pid": os.getpid()}, [], False
        if cmd == "quit":
            return {"ok": True}, [], True
        return {"ok": False, "error": f"unknown command {cmd!r}"}, [], False

    def _serve_waiting(self) -> None:
        while self.released and self.waiting and self.fd is not None:
            conn = self.waiting.pop(0)
            answer, out = self._hand_out()
            try:
                send_msg(conn, answer, out)
            except OSError as e:  # that successor died while waiting: keep the release
                self.released = True
                print(f"nfsconf-holder: waiting successor gone: {e}", file=sys.stderr,
                      flush=True)
            finally:
                conn.close()

    def run(self, ready_fd: int | None = None) -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as srv:
            if os.path.exists(self.path):
                os.unlink(self.path)
            with _reachable(self.path) as addr:
                srv.bind(addr)
            os.chmod(self.path, 0o600)
            srv.listen(8)
            if ready_fd is not None:
                os.write(ready_fd, b"ready\n")
                os.close(ready_fd)
            done = False
            while not done:
                conn, _ = srv.accept()
                conn.settimeout(10)
                deferred = False
                try:
                    msg, fds = recv_msg(conn)
                    answer, out_fds, done = self.handle(msg, fds, conn)
                    if answer is None:
                        deferred = True
                    else:
                        send_msg(conn, answer, out_fds)
                except (OSError, HolderError, ValueError) as e:
                    print(f"nfsconf-holder: bad request: {e}", file=sys.stderr, flush=True)
                finally:
                    if not deferred:
                        conn.close()
                self._serve_waiting()
        for conn in self.waiting:
            conn.close()
        if self.fd is not None:
            os.close(self.fd)
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m nfsconf.fuse.holder",
                                 description="Keep a /dev/fuse fd alive across server restarts.")
    ap.add_argument("socket", help="unix socket path to listen on")
    ap.add_argument("--ready-fd", type=int, help="write 'ready' to this fd once listening")
    args = ap.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal ^C must not drop the mount
    Holder(args.socket).run(args.ready_fd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
