"""The reference FUSE server: a passthrough over a source directory that speaks /dev/fuse itself.

``Server`` wires the parts together, each in its own module: the knobs (config), the trace
(trace), the request engine (engine), the passthrough operations (ops, dirs, with the
hostile "." lookups of hostile), the LOOKUP_HANDLE operations (handle_ops, handles) and the
/dev/fuse session (session). ``Server.process(request_bytes)`` is the whole protocol engine
and needs no /dev/fuse, so the byte-level dialect tests can drive it; ``Server.serve()`` is
the /dev/fuse loop around it.
"""

from __future__ import annotations

from typing import Any

from . import lookup_handle as lh
from .abi import Op
from .config import Config, Negotiated
from .dirs import Dirs
from .engine import Engine
from .handle_ops import LookupHandleOps
from .handles import Handles
from .nodes import Node, NodeTable
from .ops import Passthrough
from .request import Handler, Reply
from .session import Session
from .trace import Tracer

__all__ = ["Config", "Server"]


class Server:
    """One instance of the reference server on one connection."""

    def __init__(self, cfg: Config, takeover: bool = False) -> None:
        cfg.validate(takeover)
        self.cfg = cfg
        self.table = NodeTable(cfg.source, cfg.nodeid, cfg.generation, cfg.state_dir)
        if (journal := cfg.journal_path()) is not None:
            self.table.open_journal(journal, fresh=not takeover)
        self.neg = Negotiated()  # one object, shared: INIT and a takeover settle it in place
        self.tracer = Tracer(cfg.trace)
        opnames: dict[int, str] = {op: op.name for op in Op}
        self.handles = Handles(cfg, self.neg, self.table)
        self.ops = Passthrough(cfg, self.table, self.neg, self.handles, self.tracer.f is not None)
        self.dirs = Dirs(self.ops)
        self.session = Session(cfg, self.neg, self.table, self.tracer, opnames)
        # one dispatch table, filled below: a v3 COMPOUND dispatches through it as well
        handlers: dict[int, Handler] = {}
        self.lh = LookupHandleOps(self.ops, self.handles, self.neg, handlers, opnames)
        self.engine = Engine(self.tracer, handlers, self.lh.op_dialect, opnames,
                             cfg.stall_first, self.session.write)
        handlers.update(self.ops.handlers())
        handlers.update(self.dirs.handlers())
        handlers.update(self.session.handlers())
        handlers[Op.INTERRUPT] = self.engine.op_interrupt

    def process(self, buf: bytes | bytearray | memoryview) -> Reply | None:
        """Run one request; return the reply (bytes, or [header, data] for big reads)."""
        return self.engine.process(buf)

    def node_from_handle(self, fh: lh.FileHandle) -> Node:
        return self.handles.node_from_handle(fh)

    # --- the /dev/fuse session (session.py) -----------------------------------------------
    @property
    def fd(self) -> int:
        return self.session.fd

    @property
    def stop_reason(self) -> str | None:
        return self.session.stop_reason

    def mount(self) -> None:
        self.session.mount()

    def init_once(self) -> None:
        self.session.init_once(self.engine.process)

    def adopt(self, fd: int, neg: Negotiated, state: dict[str, Any] | None) -> None:
        self.session.adopt(fd, neg, state)

    def notify(self, code: int) -> str:
        return self.session.notify(code)

    def install_signals(self) -> None:
        self.session.install_signals()

    def serve(self) -> str:
        return self.session.serve(self.engine.process)

    def snapshot_state(self) -> dict[str, Any]:
        return self.session.snapshot_state()

    def unmount(self) -> None:
        self.session.unmount()

    def close(self) -> None:
        self.ops.close_files()
        self.session.close()
        self.table.close()
        self.tracer.close()
