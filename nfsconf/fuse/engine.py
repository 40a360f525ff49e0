"""The request engine: one request's bytes in, its reply's bytes out.

``Engine.process(request_bytes)`` parses the header, dispatches by opcode and traces the
request with its reply. It needs no /dev/fuse, so the byte-level dialect tests can drive it.
A handler that fails answers with an errno; nothing a request does can crash the loop.
"""

from __future__ import annotations

import errno
import os
import traceback
from collections.abc import Callable
from typing import Any

from . import abi
from .abi import Op
from .nodes import StaleNode
from .request import NO_REPLY, Handler, Reply, Req
from .trace import Tracer, errname, log

_IN = abi.InHeader.FMT
_OUT = abi.OutHeader.FMT
_NEVER_ANSWERED = (Op.FORGET, Op.INTERRUPT, Op.BATCH_FORGET)  # no reply, even on error


class Engine:
    """Dispatch by opcode to ``handlers``, and to ``fallback`` for an opcode they lack (the
    negotiated LOOKUP_HANDLE dialect's). Test hook ``stall_first``: the first request of
    that opcode gets no reply until an INTERRUPT, which ``write`` answers out of turn."""

    def __init__(self, tracer: Tracer, handlers: dict[int, Handler], fallback: Handler,
                 opnames: dict[int, str], stall_first: str | None,
                 write: Callable[[Reply], None]) -> None:
        self.tracer = tracer
        self.tracing = tracer.f is not None
        self.handlers = handlers
        self.fallback = fallback
        self.opnames = opnames
        self.write = write
        self.stalled: dict[int, Req] = {}
        self.stall_op = Op[stall_first] if stall_first else None

    def process(self, buf: bytes | bytearray | memoryview) -> Reply | None:
        """Run one request; return the reply (bytes, or [header, data] for big reads)."""
        if len(buf) < _IN.size:
            self.tracer.write({"event": "short-request", "len": len(buf)})
            return None
        hdr = _IN.unpack_from(buf, 0)
        r = Req(hdr, memoryview(buf)[_IN.size:hdr[0]])
        handler = self.handlers.get(r.opcode)
        err = 0
        result: Any = None
        try:
            if handler is None:
                result = self.fallback(r)
            else:
                result = handler(r)
        except OSError as e:
            err = e.errno or errno.EIO
            if isinstance(e, StaleNode):
                r.info["why"] = e.strerror
        except Exception as e:  # a bug must cost one request, not the mount
            err = errno.EIO
            r.info["exception"] = _where(e)
            log(f"{self.opnames.get(r.opcode, r.opcode)} raised {r.info['exception']}")
        if result is NO_REPLY or r.opcode in _NEVER_ANSWERED:
            self._trace(r, None if result is NO_REPLY else err)
            return None
        if self.stall_op is not None and r.opcode == self.stall_op and err == 0:
            self.stall_op = None
            self.stalled[r.unique] = r
            r.info["stalled"] = True
            self._trace(r, None)
            return None
        if err:
            self._trace(r, err)
            return _OUT.pack(_OUT.size, -err, r.unique)
        if self.tracing:
            self._trace(r, 0)
        if isinstance(result, list):  # [payload parts]: written with writev
            total = _OUT.size + sum(len(p) for p in result)
            return [_OUT.pack(total, 0, r.unique), *result]
        return _OUT.pack(_OUT.size + len(result), 0, r.unique) + result

    def _trace(self, r: Req, err: int | None) -> None:
        if not self.tracing:
            return
        rec: dict[str, Any] = {"unique": r.unique, "op": self.opnames.get(r.opcode, r.opcode),
                               "nodeid": r.nodeid, "pid": r.pid}
        rec.update(r.info)
        rec["result"] = "no-reply" if err is None else (errname(err) if err else 0)
        self.tracer.write(rec)

    def op_interrupt(self, r: Req) -> object:
        target = abi.InterruptIn.unpack(r.payload).unique
        r.info["target"] = target
        victim = self.stalled.pop(target, None)
        if victim is not None:  # only stalled requests are still running here
            self.write(_OUT.pack(_OUT.size, -errno.EINTR, victim.unique))
            r.info["answered"] = "EINTR"
        return NO_REPLY


def _where(e: BaseException) -> str:
    """The traceback's last line and the frame that raised: what a bug report needs."""
    frames = traceback.extract_tb(e.__traceback__)
    at = f" ({os.path.basename(frames[-1].filename)}:{frames[-1].lineno} in " \
        f"{frames[-1].name})" if frames else ""
    return f"{type(e).__name__}: {e}{at}"
