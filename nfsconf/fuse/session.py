"""The /dev/fuse session of the reference server: mount and INIT, or adopt a live
connection (takeover); then read requests, write replies, until unmount or a signal.

One thread reads a request, has the engine run it and writes the reply. The session also
answers the two opcodes that are about the connection itself: INIT and DESTROY.
"""

from __future__ import annotations

import errno
import os
import signal
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from . import abi
from . import lookup_handle as lh
from . import sysutil as su
from .abi import Op
from .config import MAX_WRITE, Config, Negotiated
from .initflags import flag_names, lookup_handle_offer
from .nodes import NodeTable
from .request import Handler, Reply, Req
from .trace import Tracer, errname

BUFSIZE = MAX_WRITE + 4096
_OUT = abi.OutHeader.FMT

Process = Callable[[bytes | bytearray | memoryview], Reply | None]


class Session:
    """One connection to the kernel (``fd``), what INIT settled on it (``neg``, shared with
    the rest of the server) and why serving ended (``stop_reason``)."""

    def __init__(self, cfg: Config, neg: Negotiated, table: NodeTable, tracer: Tracer,
                 opnames: dict[int, str]) -> None:
        self.cfg = cfg
        self.neg = neg
        self.table = table
        self.tracer = tracer
        self.opnames = opnames
        self.fd = -1
        self.stop_reason: str | None = None
        self._in_read = False

    def handlers(self) -> dict[int, Handler]:
        return {Op.INIT: self.op_init, Op.DESTROY: self.op_destroy}

    def mount(self) -> None:
        """Open /dev/fuse and mount(2) it on the mountpoint (INIT comes with the first read)."""
        if su.is_mountpoint(self.cfg.mountpoint):  # never shadow /proc, / or a live mount
            raise ValueError(f"{self.cfg.mountpoint} is already a mount point; refusing to "
                             "stack a mount on it")
        self.fd = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
        opts = (f"fd={self.fd},rootmode=40000,user_id={os.getuid()},group_id={os.getgid()},"
                "allow_other,default_permissions")
        su.mount(self.cfg.fsname, self.cfg.mountpoint, f"fuse.{self.cfg.subtype}",
                 su.MS_NOSUID | su.MS_NODEV, opts)
        self.tracer.write({"event": "mount", "mountpoint": self.cfg.mountpoint, "options": opts,
                           "config": asdict(self.cfg)})

    def op_init(self, r: Req) -> bytes:
        ini = abi.InitIn.unpack(r.payload)
        offered = ini.flags64
        r.info["kernel"] = {"major": ini.major, "minor": ini.minor,
                            "max_readahead": ini.max_readahead, "flags": hex(ini.flags),
                            "flags2": hex(ini.flags2)}
        if ini.major > abi.KERNEL_VERSION:  # kernel will retry INIT with our major
            return abi.InitOut(abi.KERNEL_VERSION, abi.KERNEL_MINOR_VERSION, 0, 0).pack()[:8]
        if ini.major < abi.KERNEL_VERSION or ini.minor < 23:
            raise OSError(errno.EPROTO, f"kernel protocol {ini.major}.{ini.minor} too old")
        want = (abi.INIT["ASYNC_READ"] | abi.INIT["ATOMIC_O_TRUNC"] | abi.INIT["BIG_WRITES"]
                | abi.INIT["DO_READDIRPLUS"] | abi.INIT["MAX_PAGES"] | abi.INIT["INIT_EXT"]
                | abi.INIT["PARALLEL_DIROPS"] | abi.INIT["AUTO_INVAL_DATA"])
        if self.cfg.export == "on":
            want |= abi.INIT["EXPORT_SUPPORT"]
        else:
            want |= abi.INIT["NO_EXPORT_SUPPORT"]
        wanted = self.cfg.lookup_handle if self.cfg.proto_minor >= 45 else "off"
        offer = lookup_handle_offer(ini.minor, offered, wanted)
        dialect = offer.dialect
        r.info["kernel"]["offered"] = flag_names(offered, ini.minor, offer.dialect)
        r.info["lookup_handle"] = {"dialect": dialect, "why": offer.why}
        if dialect is not None:
            want |= lh.FUSE_HAS_LOOKUP_HANDLE
        flags = want & offered
        minor = min(ini.minor, self.cfg.proto_minor if dialect != "v3" else lh.V3.MIN_MINOR)
        lo, hi = abi.InitOut.split_flags(flags)
        out = abi.InitOut(abi.KERNEL_VERSION, minor, ini.max_readahead, lo,
                          max_background=16, congestion_threshold=12, max_write=MAX_WRITE,
                          time_gran=1, max_pages=MAX_WRITE // 4096, flags2=hi)
        if dialect == "v2":
            out.max_handle_sz = lh.FUSE_MAX_HANDLE_SZ
        self.neg.settle(Negotiated(ini.major, ini.minor, offered, ini.max_readahead, minor,
                                   flags, MAX_WRITE, dialect, out.max_handle_sz, self.neg.epoch))
        self.opnames.update(lh.opcode_names(dialect))
        r.info["reply"] = {"minor": minor, "flags": flag_names(flags, minor, dialect),
                           "lookup_handle": dialect, "max_handle_sz": out.max_handle_sz,
                           "max_write": MAX_WRITE}
        if self.cfg.hostile in ("zero-handle", "oversize-handle", "short-handle") \
                and dialect is None:
            r.info["note"] = f"hostile {self.cfg.hostile} is inert: no LOOKUP_HANDLE offered"
        return out.pack()

    def op_destroy(self, r: Req) -> bytes:
        self.stop_reason = "destroy"
        return b""

    def init_once(self, process: Process) -> None:
        """Serve requests until INIT is answered (the mount is usable afterwards)."""
        buf = bytearray(BUFSIZE)
        while self.neg.minor == 0:
            n = os.readv(self.fd, [buf])
            reply = process(memoryview(buf)[:n])
            if reply is not None:
                self.write(reply)
            if self.stop_reason:
                raise RuntimeError(f"server stopped during INIT: {self.stop_reason}")

    def adopt(self, fd: int, neg: Negotiated, state: dict[str, Any] | None) -> None:
        """Take over a live connection: no INIT, re-queue lost requests, bump the epoch."""
        self.fd = fd
        self.neg.settle(neg)
        self.tracer.epoch = neg.epoch
        self.opnames.update(lh.opcode_names(neg.dialect))
        restored = 0
        if state is not None and state.get("table"):
            self.table.restore(state["table"])
            restored = len(self.table.by_id) - 1
        elif self.table.journal_path is not None:  # the old instance died: its journal
            restored = self.table.replay_journal()
        sent = []
        if neg.kernel_minor >= 44:
            sent.append(self.notify(abi.NOTIFY_INC_EPOCH))
        if neg.kernel_flags & abi.INIT["HAS_RESEND"]:
            sent.append(self.notify(abi.NOTIFY_RESEND))
        self.tracer.write({"event": "takeover", "epoch": neg.epoch, "restored_nodes": restored,
                           "notified": sent, "negotiated": asdict(neg)})

    def notify(self, code: int) -> str:
        name = abi.NOTIFY_CODES.get(code, str(code))
        try:
            os.write(self.fd, abi.pack_notify(code))
            self.tracer.write({"event": "notify", "code": name, "result": 0})
            return name
        except OSError as e:
            self.tracer.write({"event": "notify", "code": name, "result": errname(e.errno)})
            return f"{name}:{errname(e.errno)}"

    def write(self, reply: Reply) -> None:
        try:
            if isinstance(reply, list):
                os.writev(self.fd, reply)
            else:
                os.write(self.fd, reply)
        except OSError as e:
            if e.errno == errno.ENODEV:
                self.stop_reason = "unmounted"
            elif e.errno != errno.ENOENT:  # ENOENT: the request was interrupted meanwhile
                head = reply[0] if isinstance(reply, list) else reply
                # the kernel refused the reply itself (a size it did not expect: EINVAL)
                self.tracer.write({"event": "reply-error", "errno": errname(e.errno),
                                   "unique": _OUT.unpack_from(head)[2],
                                   "bytes": sum(map(len, reply)) if isinstance(reply, list)
                                   else len(reply)})

    def _on_signal(self, signum: int, _frame: object) -> None:
        self.stop_reason = "handover" if signum == signal.SIGUSR1 else "stop"
        if self._in_read:
            raise _Wakeup()

    def install_signals(self) -> None:
        """SIGTERM/SIGINT mean "stop", SIGUSR1 "handover": from before the server says it is
        ready, so a signal sent right after that is never the default (death, no unmount)."""
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
            signal.signal(sig, self._on_signal)

    def serve(self, process: Process) -> str:
        """Serve until unmount, SIGTERM/SIGINT ("stop") or SIGUSR1 ("handover")."""
        buf = bytearray(BUFSIZE)
        view = memoryview(buf)
        readv = os.readv
        fd = self.fd
        write = self.write
        while self.stop_reason is None:
            try:
                self._in_read = True
                if self.stop_reason is not None:
                    break
                n = readv(fd, [buf])
                self._in_read = False
            except _Wakeup:
                break
            except OSError as e:
                self._in_read = False
                if e.errno in (errno.ENOENT, errno.EINTR, errno.EAGAIN):
                    continue
                if e.errno == errno.ENODEV:
                    self.stop_reason = "unmounted"
                    break
                raise
            reply = process(view[:n])
            if reply is not None:
                write(reply)
        self._in_read = False
        return self.stop_reason or "stop"

    def snapshot_state(self) -> dict[str, Any]:
        return {"table": self.table.snapshot()}

    def unmount(self) -> None:
        try:
            su.umount2(self.cfg.mountpoint, su.MNT_DETACH)
        except OSError as e:
            self.tracer.write({"event": "umount-error", "errno": errname(e.errno)})

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class _Wakeup(Exception):
    """Raised by the signal handler to leave a blocking read of /dev/fuse."""
