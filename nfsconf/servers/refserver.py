"""The reference server (nfsconf/fuse) as a lab server: the same life cycle as a command
profile's ServerProcess, plus what only it can do — hand its connection to a successor
without unmounting, come back with other knobs, and show its request trace."""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nfsconf.fuse.control import RefServer, RefServerError
from nfsconf.mounttable import MountEntry, MountError, fuse_mount_at


class RefServerProcess:
    def __init__(self, knobs: dict[str, Any], source: Path, mountpoint: Path,
                 workdir: Path) -> None:
        self.knobs = dict(knobs)
        self.source = source
        self.mountpoint = mountpoint
        self.workdir = workdir
        self.argv = ["python", "-m", "nfsconf.fuse", str(source), str(mountpoint),
                     *(f"--{k.replace('_', '-')}={v}" for k, v in self.knobs.items())]
        self.srv: RefServer | None = None

    @property
    def pid(self) -> int | None:
        return self.srv.pid if self.srv else None

    @property
    def proc(self) -> Any:
        return self.srv.proc if self.srv else None

    @property
    def trace_path(self) -> Path | None:
        path = self.srv.trace_path if self.srv else None
        return Path(path) if path else None

    def start(self, timeout: float = 15.0, **overrides: Any) -> MountEntry:
        knobs = {**self.knobs, **overrides}
        knobs.setdefault("state_dir", str(self.workdir / "state"))
        trace = knobs.pop("trace", "on") != "off"
        self.srv = RefServer(workdir=str(self.workdir / "ref"), trace=trace,
                             start_timeout=timeout)
        try:
            self.srv.start(str(self.source), str(self.mountpoint), **knobs)
        except (RefServerError, OSError, ValueError) as e:
            raise MountError(f"reference server did not mount: {e}") from e
        entry = fuse_mount_at(self.mountpoint)
        if entry is None:
            raise MountError("reference server reported ready but nothing is mounted")
        return entry

    def alive(self) -> bool:
        return self.srv is not None and self.srv.proc is not None and \
            self.srv.proc.poll() is None

    def live_restart(self) -> int:
        assert self.srv is not None
        return self.srv.live_restart()

    def kill_and_takeover(self) -> int:
        assert self.srv is not None
        return self.srv.kill_and_takeover()

    def log_tail(self, lines: int = 3) -> str:
        try:
            text = Path(self.workdir / "ref" / "server.log").read_text(errors="replace")
        except OSError:
            return ""
        return " | ".join(text.strip().splitlines()[-lines:]) or "(no output)"

    def stop(self, grace: float = 5.0) -> list[str]:
        if self.srv is None:
            return []
        try:
            self.srv.stop()
        except RefServerError as e:
            return [str(e)]
        return []


@dataclass
class Trace:
    tail: list[dict[str, Any]] = field(default_factory=list)  # the last requests
    exceptions: list[str] = field(default_factory=list)  # what the server's handlers raised


def read_trace(path: Path | None, n: int = 40) -> Trace:
    """The last N requests of the trace and every exception a handler raised, for the
    evidence of a cell."""
    out = Trace()
    if path is None or not path.exists():
        return out
    tail: deque[dict[str, Any]] = deque(maxlen=n)
    with open(path, errors="replace") as f:
        for line in f:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if "exception" in rec:
                out.exceptions.append(f"{rec.get('op')}: {rec['exception']}")
            if "op" in rec:
                tail.append({k: rec[k] for k in ("op", "nodeid", "name", "result", "reply",
                                                 "instance") if k in rec})
    out.tail = list(tail)
    return out

