"""One decoded FUSE request, shared by the engine and the handlers it dispatches to."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

NO_REPLY = object()  # a handler's "send nothing" (FORGET, withheld replies)


class Req:
    """One decoded request; ``info`` collects what the trace line should say about it."""

    __slots__ = ("opcode", "unique", "nodeid", "uid", "gid", "pid", "extlen", "payload", "info")

    def __init__(self, hdr: tuple[int, ...], payload: memoryview | bytes) -> None:
        (_ln, self.opcode, self.unique, self.nodeid, self.uid, self.gid, self.pid,
         self.extlen, _pad) = hdr
        self.payload = payload
        self.info: dict[str, Any] = {}


Handler = Callable[[Req], Any]  # one opcode's handler: the reply body, or NO_REPLY
Reply = bytes | list[bytes]  # a whole reply; [header, data] is written with writev
