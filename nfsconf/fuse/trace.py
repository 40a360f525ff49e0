"""What the reference server records: the JSONL trace (written and read back) and its log.

One trace line per request with its reply, plus events (mount, init, notify, takeover, ...);
every instance of a server appends to the same file, so a reader sees one connection's life.
"""

from __future__ import annotations

import errno
import json
import os
import sys
import time
from typing import Any


class Tracer:
    """JSONL trace: one line per request with its reply, plus events (init, notify, ...)."""

    def __init__(self, path: str | None, epoch: int = 0) -> None:
        self.f = open(path, "a", buffering=1) if path else None  # open for the server lifetime
        self.pid = os.getpid()
        self.epoch = epoch

    def write(self, rec: dict[str, Any]) -> None:
        if self.f is None:
            return
        rec.setdefault("ts", round(time.time(), 6))
        rec["server_pid"] = self.pid
        rec["instance"] = self.epoch
        self.f.write(json.dumps(rec, default=_json_default) + "\n")

    def close(self) -> None:
        if self.f is not None:
            self.f.close()
            self.f = None


def _json_default(o: object) -> object:
    if isinstance(o, bytes | bytearray | memoryview):
        return bytes(o).decode("utf-8", "backslashreplace")
    return str(o)


def errname(e: int) -> str:
    """An errno as the trace writes it: its symbolic name, or the number if it has none."""
    return errno.errorcode.get(e, str(e))


def log(msg: str) -> None:
    print(f"nfsconf-ref[{os.getpid()}]: {msg}", file=sys.stderr, flush=True)


def trace_records(path: str) -> list[dict[str, Any]]:
    """Parse a trace file (JSONL) into dicts; tolerate a torn last line of a killed server."""
    return trace_from(path)[0]


def trace_from(path: str | os.PathLike[str] | None,
               offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    """Every record of the trace from byte OFFSET on, and the offset after the last whole
    line: call again with it to read only what came since."""
    if path is None or not os.path.exists(path):
        return [], offset
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read()
    end = data.rfind(b"\n") + 1  # a line being written stays for the next call
    out = []
    for line in data[:end].splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out, offset + end
