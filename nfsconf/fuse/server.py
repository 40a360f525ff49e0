"""The reference FUSE server: a passthrough over a source directory that speaks /dev/fuse itself.

One thread reads a request, runs it against the source directory and writes the reply.
``Server.process(request_bytes)`` is the whole protocol engine and needs no /dev/fuse, so the
byte-level dialect tests can drive it; ``Server.serve()`` is the /dev/fuse loop around it.
A handler that fails answers with an errno; nothing a request does can crash the loop.
"""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import stat
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from . import abi
from . import lookup_handle as lh
from . import sysutil as su
from .handle_ops import LookupHandleOps
from .initflags import flag_names, lookup_handle_offer
from .nodes import Node, NodeTable, StaleNode, mode_to_dtype
from .request import NO_REPLY, Req

HOSTILE_MODES = ("dot-wrong-nodeid", "generation-flip", "reuse-other-file", "zero-handle",
                 "oversize-handle", "short-handle", "no-reply")
# test hooks: "lookup-dot" makes LOOKUP(nodeid, ".") raise, as a bug in a hostile branch would
FAULTS = ("lookup-dot",)
MAX_WRITE = 128 * 1024
BUFSIZE = MAX_WRITE + 4096
_HS_NAME = re.compile(rb"hs(\d{1,3})")
_IN = abi.InHeader.FMT
_OUT = abi.OutHeader.FMT
_ENTRY_HEAD = abi.EntryOut.HEAD
_ATTR = abi.Attr.FMT
_DIRENT = abi.DIRENT_HEAD
_O_STRIP = os.O_CREAT | os.O_EXCL | os.O_NOCTTY | os.O_APPEND
_NEVER_ANSWERED = (2, 36, 42)  # FORGET, INTERRUPT, BATCH_FORGET: no reply, even on error
# hot-path decoders: raw struct reads instead of dataclasses for the decode-path opcodes
_GETATTR_IN = abi.GetattrIn.FMT
_FORGET_IN = abi.ForgetIn.FMT
_OPEN_IN = abi.OpenIn.FMT
_FH_ONLY = abi.ForgetIn.FMT  # the leading u64 fh of release_in / flush_in / read_in
_OPEN_OUT = abi.OpenOut.FMT


@dataclass
class Config:
    """Every knob of the server; the CLI maps one option to each field."""

    source: str
    mountpoint: str
    nodeid: str = "stable"  # volatile | stable
    generation: str = "zero"  # zero | bump
    export: str = "on"  # on | off
    forget: str = "honour"  # honour | ignore
    handle_size: int = 32  # LOOKUP_HANDLE handle size, only if the kernel offers it
    # test hook: an object named hsN (N = 1..128) gets a handle of N bytes
    handle_size_by_name: bool = False
    handle_salt: str = "none"  # none | instance: handles of one server instance only
    proto_minor: int = abi.KERNEL_MINOR_VERSION  # the newest 7.x minor to speak
    hostile: str | None = None
    trace: str | None = None
    timeout: float = 1.0  # entry and attribute validity, seconds
    fsname: str = "nfsconf-ref"
    subtype: str = "nfsconf-ref"
    stall_first: str | None = None  # test hook: withhold the reply of the first such opcode
    # auto: speak LOOKUP_HANDLE when the kernel really offers it (initflags); off: decline;
    # v2 / v3: that dialect only
    lookup_handle: str = "auto"
    state_dir: str | None = None
    fault: str | None = None  # test hook, one of FAULTS

    def validate(self, takeover: bool = False) -> None:
        """Check every knob. A takeover must not stat the mountpoint: nobody serves it yet."""
        choices = {"nodeid": ("volatile", "stable"), "generation": ("zero", "bump"),
                   "export": ("on", "off"), "forget": ("honour", "ignore"),
                   "lookup_handle": ("auto", "off", "v2", "v3"),
                   "handle_salt": ("none", "instance")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"--{name.replace('_', '-')} must be one of {allowed}, "
                                 f"not {getattr(self, name)!r}")
        if self.hostile is not None and self.hostile not in HOSTILE_MODES:
            raise ValueError(f"--hostile must be one of {HOSTILE_MODES}, not {self.hostile!r}")
        if not 1 <= self.handle_size <= lh.FUSE_MAX_HANDLE_SZ:
            raise ValueError(f"--handle-size must be 1..{lh.FUSE_MAX_HANDLE_SZ}")
        if self.fault is not None and self.fault not in FAULTS:
            raise ValueError(f"--fault must be one of {FAULTS}, not {self.fault!r}")
        if self.stall_first is not None and self.stall_first not in abi.OP:
            raise ValueError(f"--stall-first: unknown opcode name {self.stall_first!r}")
        if not os.path.isdir(self.source):
            raise ValueError(f"source {self.source!r} is not a directory")
        if not takeover and not os.path.isdir(self.mountpoint):
            raise ValueError(f"mountpoint {self.mountpoint!r} is not a directory")
        if not 23 <= self.proto_minor <= abi.KERNEL_MINOR_VERSION:
            raise ValueError(f"--proto-minor must be 23..{abi.KERNEL_MINOR_VERSION}")
        if self.timeout < 0:
            raise ValueError("--timeout must be >= 0")


@dataclass
class Negotiated:
    """What INIT settled; a successor needs it because it never sees INIT."""

    kernel_major: int = 0
    kernel_minor: int = 0
    kernel_flags: int = 0
    max_readahead: int = 0
    minor: int = 0
    flags: int = 0
    max_write: int = MAX_WRITE
    dialect: str | None = None
    max_handle_sz: int = 0
    epoch: int = 0  # server instance number on this connection (fh namespace)


@dataclass
class DirHandle:
    node: Node
    entries: list[tuple[bytes, int, int]] = field(default_factory=list)  # name, ino, dtype


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


def _where(e: BaseException) -> str:
    """The traceback's last line and the frame that raised: what a bug report needs."""
    frames = traceback.extract_tb(e.__traceback__)
    at = f" ({os.path.basename(frames[-1].filename)}:{frames[-1].lineno} in " \
        f"{frames[-1].name})" if frames else ""
    return f"{type(e).__name__}: {e}{at}"


def _errname(e: int) -> str:
    return errno.errorcode.get(e, str(e))


class Server(LookupHandleOps):
    def __init__(self, cfg: Config, takeover: bool = False) -> None:
        cfg.validate(takeover)
        self.cfg = cfg
        self.table = NodeTable(cfg.source, cfg.nodeid, cfg.generation, cfg.state_dir)
        self.neg = Negotiated()
        self.fd = -1
        self.files: dict[int, int] = {}  # fh -> backing fd
        self.dirs: dict[int, DirHandle] = {}
        self.fh_counter = 0
        self.stalled: dict[int, Req] = {}
        self.stall_op = abi.OP[cfg.stall_first] if cfg.stall_first else None
        self.tracer = Tracer(cfg.trace)
        self.tracing = self.tracer.f is not None
        self.ttl = int(cfg.timeout)
        self.ttl_ns = int((cfg.timeout - self.ttl) * 1e9)
        self.stop_reason: str | None = None
        self._in_read = False
        self.opnames = dict(abi.OPCODES)
        self.flip: dict[int, int] = {}
        self.handle_sizes: dict[int, int] = {}  # nodeid -> handle size asked by its name
        self.salt = os.urandom(4) if cfg.handle_salt == "instance" else b""
        self.handlers: dict[int, Callable[[Req], Any]] = {
            1: self.op_lookup, 2: self.op_forget, 3: self.op_getattr, 4: self.op_setattr,
            5: self.op_readlink, 6: self.op_symlink, 8: self.op_mknod, 9: self.op_mkdir,
            10: self.op_unlink, 11: self.op_rmdir, 12: self.op_rename, 13: self.op_link,
            14: self.op_open, 15: self.op_read, 16: self.op_write, 17: self.op_statfs,
            18: self.op_release, 20: self.op_fsync, 25: self.op_flush, 26: self.op_init,
            27: self.op_opendir, 28: self.op_readdir, 29: self.op_releasedir,
            30: self.op_fsyncdir, 34: self.op_access, 35: self.op_create,
            36: self.op_interrupt, 38: self.op_destroy, 42: self.op_batch_forget,
            44: self.op_readdirplus, 45: self.op_rename2, 52: self.op_statx,
        }
        os.umask(0)  # the kernel already applied the caller's umask to every mode it sends

    # ================================================================ request engine ====
    def process(self, buf: bytes | bytearray | memoryview) -> bytes | list[bytes] | None:
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
                result = self.op_dialect(r)
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
        rec["result"] = "no-reply" if err is None else (_errname(err) if err else 0)
        self.tracer.write(rec)

    # ================================================================ helpers ===========
    def _name(self, r: Req, offset: int = 0) -> bytes:
        data = bytes(r.payload[offset:])
        end = data.find(b"\0")
        name = data if end < 0 else data[:end]
        if self.tracing:
            r.info["name"] = name
            if end < 0:  # the protocol says NUL-terminated; the kernel under test did not
                r.info["name_unterminated"] = data.hex()
        return name

    def _attr_from_stat(self, st: os.stat_result) -> bytes:
        return _ATTR.pack(st.st_ino, st.st_size, st.st_blocks, int(st.st_atime),
                          int(st.st_mtime), int(st.st_ctime), st.st_atime_ns % 1_000_000_000,
                          st.st_mtime_ns % 1_000_000_000, st.st_ctime_ns % 1_000_000_000,
                          st.st_mode, st.st_nlink, st.st_uid, st.st_gid, st.st_rdev,
                          st.st_blksize, 0)

    def _entry(self, node: Node, st: os.stat_result, r: Req, nodeid: int | None = None,
               generation: int | None = None) -> bytes:
        nid = node.nodeid if nodeid is None else nodeid
        gen = node.generation if generation is None else generation
        if self.tracing:
            r.info["reply"] = {"nodeid": nid, "generation": gen, "ino": st.st_ino}
        return _ENTRY_HEAD.pack(nid, gen, self.ttl, self.ttl, self.ttl_ns, self.ttl_ns) + \
            self._attr_from_stat(st)

    def _child(self, parent: Node, name: bytes) -> tuple[Node, os.stat_result]:
        """Find ``name`` in ``parent`` on the source and return its node (lookup count +1)."""
        pfd = self.table.fd(parent)
        st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
        # Always ask for the handle: ext4 reuses inode numbers, the handle's generation tells
        # a new file from an old one that still has a node here.
        htype, hdata, _mnt = su.name_to_handle_at(pfd, name)
        node = self.table.node_for(htype, hdata, st.st_ino)
        self.table.looked_up(node)
        if self.cfg.handle_size_by_name and (m := _HS_NAME.fullmatch(name)):
            self.handle_sizes[node.nodeid] = min(int(m.group(1)), lh.FUSE_MAX_HANDLE_SZ + 1)
        return node, st

    def _node(self, r: Req) -> Node:
        return self.table.get(r.nodeid)

    def _stat(self, node: Node) -> os.stat_result:
        return os.fstat(self.table.fd(node))

    def _proc(self, node: Node) -> str:
        return f"/proc/self/fd/{self.table.fd(node)}"

    def _new_fh(self) -> int:
        # instance epoch in the high bits: a successor never mistakes an old fh for its own
        self.fh_counter += 1
        return self.neg.epoch << 40 | self.fh_counter

    def _file_fd(self, fh: int, r: Req, flags: int = os.O_RDWR) -> int:
        fd = self.files.get(fh)
        if fd is None:  # opened by a previous server instance: reopen by handle
            node = self._node(r)
            fd = self.table.open(node, (flags & ~_O_STRIP) | os.O_CLOEXEC)
            self.files[fh] = fd
            r.info["reopened_fh"] = fh
        return fd

    def _chown_new(self, fd_or_path: int, r: Req) -> None:
        if r.uid or r.gid:
            su.fchown_empty(fd_or_path, r.uid, r.gid)

    # ================================================================ INIT / control ====
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
        if dialect == "v2":
            # v2 grows fuse_entry_out by the 8-byte handle header inside fuse_direntplus but
            # leaves no room for handle bytes, and rejects size 0: plain READDIR only.
            want &= ~abi.INIT["DO_READDIRPLUS"]
        flags = want & offered
        minor = min(ini.minor, self.cfg.proto_minor if dialect != "v3" else lh.V3.MIN_MINOR)
        lo, hi = abi.InitOut.split_flags(flags)
        out = abi.InitOut(abi.KERNEL_VERSION, minor, ini.max_readahead, lo,
                          max_background=16, congestion_threshold=12, max_write=MAX_WRITE,
                          time_gran=1, max_pages=MAX_WRITE // 4096, flags2=hi)
        if dialect == "v2":
            out.max_handle_sz = lh.FUSE_MAX_HANDLE_SZ
        self.neg = Negotiated(ini.major, ini.minor, offered, ini.max_readahead, minor, flags,
                              MAX_WRITE, dialect, out.max_handle_sz, self.neg.epoch)
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

    def op_interrupt(self, r: Req) -> object:
        target = abi.InterruptIn.unpack(r.payload).unique
        r.info["target"] = target
        victim = self.stalled.pop(target, None)
        if victim is not None:  # only stalled requests are still running here
            self._write(_OUT.pack(_OUT.size, -errno.EINTR, victim.unique))
            r.info["answered"] = "EINTR"
        return NO_REPLY

    def op_forget(self, r: Req) -> object:
        (n,) = _FORGET_IN.unpack_from(r.payload)
        if self.cfg.forget == "honour":
            dropped = self.table.forget(r.nodeid, n)
            if self.tracing:
                r.info["dropped"] = dropped
        if self.tracing:
            r.info["nlookup"] = n
        return NO_REPLY

    def op_batch_forget(self, r: Req) -> object:
        count = abi.BatchForgetIn.unpack(r.payload).count
        pos = abi.BatchForgetIn.nbytes()
        dropped = 0
        items = []
        for _ in range(count):
            one = abi.ForgetOne.unpack(r.payload, pos)
            pos += abi.ForgetOne.nbytes()
            items.append([one.nodeid, one.nlookup])
            if self.cfg.forget == "honour":
                dropped += self.table.forget(one.nodeid, one.nlookup)
        if self.tracing:
            r.info["forgets"] = items
            r.info["dropped"] = dropped
        return NO_REPLY

    # ================================================================ lookup ============
    def op_lookup(self, r: Req) -> object:
        name = self._name(r)
        parent = self._node(r)
        if name in (b".", b".."):
            return self._lookup_dot(r, parent, name)
        node, st = self._child(parent, name)
        return self._entry(node, st, r)

    def _lookup_dot(self, r: Req, node: Node, name: bytes) -> object:
        """LOOKUP(nodeid, ".") and (nodeid, ".."): how the kernel decodes export handles."""
        hostile = self.cfg.hostile
        if hostile == "no-reply":
            r.info["hostile"] = "no-reply"
            return NO_REPLY
        if name == b"..":
            if node is self.table.root:
                target, st = node, self._stat(node)
            else:
                pst = os.stat("..", dir_fd=self.table.fd(node), follow_symlinks=False)
                if pst.st_ino == self.table.root.ino:
                    target, st = self.table.root, pst
                else:
                    target, st = self._child(node, b"..")
                    return self._entry(target, st, r)
            self.table.looked_up(target)
            return self._entry(target, st, r)
        if self.cfg.fault == "lookup-dot":
            raise RuntimeError("injected fault (--fault lookup-dot)")
        st = self.table.fresh_stat(node)
        if st.st_nlink == 0 and not stat.S_ISDIR(st.st_mode):
            raise StaleNode(node.nodeid, "backing file was unlinked")
        if hostile == "dot-wrong-nodeid" and node is not self.table.root:
            alias = self.table.add_alias(self.table.fresh_id(), 0, node)
            self.table.looked_up(alias)
            r.info["hostile"] = f"answered nodeid {alias.nodeid:#x} for {node.nodeid:#x}"
            return self._entry(alias, st, r)
        if hostile == "generation-flip" and node is not self.table.root:
            flip = self.flip.get(node.nodeid, 0) + 1
            self.flip[node.nodeid] = flip
            gen = (node.generation + flip) & 0xFFFFFFFF
            self.table.looked_up(node)
            r.info["hostile"] = f"generation {node.generation} -> {gen}"
            return self._entry(node, st, r, generation=gen)
        if hostile == "reuse-other-file" and node is not self.table.root:
            decoy = self._decoy(node, st)
            if decoy is not None:
                other, ost = decoy
                alias = self.table.add_alias(node.nodeid, node.generation, other)
                self.table.looked_up(alias)
                r.info["hostile"] = f"nodeid {node.nodeid:#x} now names ino {ost.st_ino}"
                return self._entry(alias, ost, r)
        self.table.looked_up(node)
        return self._entry(node, st, r)

    def _decoy(self, node: Node, st: os.stat_result) -> tuple[Node, os.stat_result] | None:
        """Another file of the same type next to ``node`` (for reuse-other-file)."""
        fd = self.table.fd(node)
        parent_fd = os.open("..", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd) \
            if stat.S_ISDIR(st.st_mode) else None
        try:
            if parent_fd is None:  # a file: its directory is unknown from an O_PATH fd alone
                parent_fd = self._parent_dir_of(node)
            if parent_fd is None:
                return None
            for name in sorted(os.listdir(parent_fd)):
                ost = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
                if ost.st_ino != st.st_ino and stat.S_IFMT(ost.st_mode) == stat.S_IFMT(st.st_mode):
                    htype, hdata, _m = su.name_to_handle_at(parent_fd, name.encode())
                    other = self.table.node_for(htype, hdata, ost.st_ino)
                    return other, ost
            return None
        finally:
            if parent_fd is not None:
                os.close(parent_fd)

    def _parent_dir_of(self, node: Node) -> int | None:
        # A regular file's directory: scan the directories the table knows, root first.
        for cand in [self.table.root, *[n for n in self.table.by_id.values() if n.fd >= 0]]:
            try:
                cst = os.fstat(self.table.fd(cand))
                if not stat.S_ISDIR(cst.st_mode):
                    continue
                dfd = os.open(".", os.O_RDONLY | os.O_DIRECTORY, dir_fd=self.table.fd(cand))
            except OSError:
                continue
            with os.scandir(dfd) as it:
                if any(e.inode() == node.ino for e in it):
                    return dfd
            os.close(dfd)
        return None

    # ================================================================ attributes ========
    def op_getattr(self, r: Req) -> bytes:
        flags, fh = _GETATTR_IN.unpack_from(r.payload)
        if flags & abi.GETATTR_FH and fh in self.files:
            st = os.fstat(self.files[fh])
        else:
            st = self._stat(self._node(r))
        return abi.AttrOut.HEAD.pack(self.ttl, self.ttl_ns) + self._attr_from_stat(st)

    def op_setattr(self, r: Req) -> bytes:
        sa = abi.SetattrIn.unpack(r.payload)
        node = self._node(r)
        v = sa.valid
        path = self._proc(node)
        r.info["valid"] = v
        if v & abi.FATTR_MODE:
            os.chmod(path, stat.S_IMODE(sa.mode))
        if v & (abi.FATTR_UID | abi.FATTR_GID):
            uid = sa.uid if v & abi.FATTR_UID else -1
            gid = sa.gid if v & abi.FATTR_GID else -1
            su.fchown_empty(self.table.fd(node), uid, gid)
        if v & abi.FATTR_SIZE:
            if v & abi.FATTR_FH:
                os.ftruncate(self._file_fd(sa.fh, r), sa.size)
            else:
                os.truncate(path, sa.size)
        if v & (abi.FATTR_ATIME | abi.FATTR_MTIME):
            st = self._stat(node)
            now = time.time_ns()
            if v & abi.FATTR_ATIME:
                at = now if v & abi.FATTR_ATIME_NOW else sa.atime * 10**9 + sa.atimensec
            else:
                at = st.st_atime_ns
            if v & abi.FATTR_MTIME:
                mt = now if v & abi.FATTR_MTIME_NOW else sa.mtime * 10**9 + sa.mtimensec
            else:
                mt = st.st_mtime_ns
            os.utime(path, ns=(at, mt))
        st = self._stat(node)
        return abi.AttrOut.HEAD.pack(self.ttl, self.ttl_ns) + self._attr_from_stat(st)

    def op_statx(self, r: Req) -> bytes:
        sx = abi.StatxIn.unpack(r.payload)
        if sx.getattr_flags & abi.GETATTR_FH and sx.fh in self.files:
            st = os.fstat(self.files[sx.fh])
        else:
            st = self._stat(self._node(r))
        return self._statx_out(st)

    def _statx_out(self, st: os.stat_result) -> bytes:
        basic = 0x7FF  # STATX_BASIC_STATS
        s = abi.Statx(basic, st.st_blksize, 0, st.st_nlink, st.st_uid, st.st_gid, st.st_mode,
                      st.st_ino, st.st_size, st.st_blocks, 0,
                      int(st.st_atime), st.st_atime_ns % 10**9, 0, 0,
                      int(st.st_ctime), st.st_ctime_ns % 10**9,
                      int(st.st_mtime), st.st_mtime_ns % 10**9,
                      os.major(st.st_rdev), os.minor(st.st_rdev),
                      os.major(st.st_dev), os.minor(st.st_dev))
        return abi.StatxOut(self.ttl, self.ttl_ns, 0, s).pack()

    def op_access(self, r: Req) -> bytes:
        mask = abi.AccessIn.unpack(r.payload).mask
        path = self._proc(self._node(r))
        os.stat(path, follow_symlinks=False)  # F_OK, and ESTALE/ENOENT as they come
        if mask and not os.access(path, mask):
            raise OSError(errno.EACCES, "access denied")
        return b""

    def op_readlink(self, r: Req) -> bytes:
        return os.fsencode(os.readlink("", dir_fd=self.table.fd(self._node(r))))

    def op_statfs(self, r: Req) -> bytes:
        sv = os.statvfs(self.table.root_fd)
        return abi.Kstatfs(sv.f_blocks, sv.f_bfree, sv.f_bavail, sv.f_files, sv.f_ffree,
                           sv.f_bsize, sv.f_namemax, sv.f_frsize).pack()

    # ================================================================ namespace =========
    def _made(self, r: Req, parent: Node, name: bytes) -> bytes:
        node, st = self._child(parent, name)
        if r.uid or r.gid:
            su.fchown_empty(self.table.fd(node), r.uid, r.gid)
            st = self._stat(node)
        return self._entry(node, st, r) + self._v2_handle(node, r)

    def op_mknod(self, r: Req) -> bytes:
        mi = abi.MknodIn.unpack(r.payload)
        name = self._name(r, abi.MknodIn.nbytes())
        parent = self._node(r)
        os.mknod(name, mi.mode, mi.rdev, dir_fd=self.table.fd(parent))
        return self._made(r, parent, name)

    def op_mkdir(self, r: Req) -> bytes:
        mi = abi.MkdirIn.unpack(r.payload)
        name = self._name(r, abi.MkdirIn.nbytes())
        parent = self._node(r)
        os.mkdir(name, mi.mode & 0o7777, dir_fd=self.table.fd(parent))
        return self._made(r, parent, name)

    def op_symlink(self, r: Req) -> bytes:
        name, target = abi.split_names(r.payload, 2)
        r.info["name"] = name
        r.info["target"] = target
        parent = self._node(r)
        os.symlink(target, name, dir_fd=self.table.fd(parent))
        return self._made(r, parent, name)

    def op_link(self, r: Req) -> bytes:
        old = abi.LinkIn.unpack(r.payload).oldnodeid
        name = self._name(r, abi.LinkIn.nbytes())
        r.info["oldnodeid"] = old
        src = self.table.get(old)
        parent = self._node(r)
        os.link(self._proc(src), name, dst_dir_fd=self.table.fd(parent), follow_symlinks=True)
        node, st = self._child(parent, name)
        return self._entry(node, st, r) + self._v2_handle(node, r)

    def op_unlink(self, r: Req) -> bytes:
        name = self._name(r)
        os.unlink(name, dir_fd=self.table.fd(self._node(r)))
        return b""

    def op_rmdir(self, r: Req) -> bytes:
        name = self._name(r)
        os.rmdir(name, dir_fd=self.table.fd(self._node(r)))
        return b""

    def _rename(self, r: Req, newdir: int, flags: int, off: int) -> bytes:
        old, new = abi.split_names(r.payload[off:], 2)
        r.info.update(name=old, newname=new, newdir=newdir, flags=flags)
        src = self.table.fd(self._node(r))
        dst = self.table.fd(self.table.get(newdir))
        if flags:
            su.renameat2(src, old, dst, new, flags)
        else:
            os.rename(old, new, src_dir_fd=src, dst_dir_fd=dst)
        return b""

    def op_rename(self, r: Req) -> bytes:
        return self._rename(r, abi.RenameIn.unpack(r.payload).newdir, 0, abi.RenameIn.nbytes())

    def op_rename2(self, r: Req) -> bytes:
        ri = abi.Rename2In.unpack(r.payload)
        return self._rename(r, ri.newdir, ri.flags, abi.Rename2In.nbytes())

    # ================================================================ files =============
    def op_open(self, r: Req) -> bytes:
        flags = _OPEN_IN.unpack_from(r.payload)[0]
        node = self._node(r)
        fd = self.table.open(node, (flags & ~_O_STRIP) | os.O_CLOEXEC)
        fh = self._new_fh()
        self.files[fh] = fd
        if self.tracing:
            r.info["fh"] = fh
        # A read-only open has nothing to flush and this server keeps no locks: spare the
        # kernel the synchronous FLUSH on close (FOPEN_NOFLUSH, 7.35).
        oflags = abi.FOPEN_NOFLUSH if flags & os.O_ACCMODE == os.O_RDONLY else 0
        return _OPEN_OUT.pack(fh, oflags, 0)

    def op_create(self, r: Req) -> bytes:
        ci = abi.CreateIn.unpack(r.payload)
        name = self._name(r, abi.CreateIn.nbytes())
        parent = self._node(r)
        flags = (ci.flags & ~(os.O_NOCTTY | os.O_APPEND)) | os.O_CREAT | os.O_CLOEXEC
        fd = os.open(name, flags, ci.mode & 0o7777, dir_fd=self.table.fd(parent))
        try:
            entry = self._made(r, parent, name)
        except BaseException:
            os.close(fd)
            raise
        fh = self._new_fh()
        self.files[fh] = fd
        r.info["fh"] = fh
        return entry + _OPEN_OUT.pack(fh, 0, 0)

    def op_read(self, r: Req) -> list[bytes]:
        ri = abi.ReadIn.unpack(r.payload)
        fd = self._file_fd(ri.fh, r, ri.flags)
        data = os.pread(fd, ri.size, ri.offset)
        if self.tracing:
            r.info.update(offset=ri.offset, size=ri.size, got=len(data))
        return [data]

    def op_write(self, r: Req) -> bytes:
        wi = abi.WriteIn.unpack(r.payload)
        fd = self._file_fd(wi.fh, r, wi.flags)
        start = abi.WriteIn.nbytes()
        n = os.pwrite(fd, r.payload[start:start + wi.size], wi.offset)
        if self.tracing:
            r.info.update(offset=wi.offset, size=wi.size, wrote=n)
        return abi.WriteOut(n).pack()

    def op_flush(self, r: Req) -> bytes:
        return b""

    def op_fsync(self, r: Req) -> bytes:
        fi = abi.FsyncIn.unpack(r.payload)
        fd = self._file_fd(fi.fh, r, os.O_RDONLY)
        if fi.fsync_flags & abi.FSYNC_FDATASYNC:
            os.fdatasync(fd)
        else:
            os.fsync(fd)
        return b""

    def op_release(self, r: Req) -> bytes:
        fh = _FH_ONLY.unpack_from(r.payload)[0]
        fd = self.files.pop(fh, None)
        if fd is not None:
            os.close(fd)
        return b""

    # ================================================================ directories =======
    def _snapshot(self, dh: DirHandle) -> None:
        dfd = self.table.open(dh.node, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            own = os.fstat(dfd).st_ino
            up = os.stat("..", dir_fd=dfd).st_ino if dh.node is not self.table.root else own
            entries = [(b".", own, 4), (b"..", up, 4)]
            with os.scandir(dfd) as it:
                for e in it:
                    if e.is_dir(follow_symlinks=False):
                        dt = 4
                    elif e.is_file(follow_symlinks=False):
                        dt = 8
                    elif e.is_symlink():
                        dt = 10
                    else:
                        dt = mode_to_dtype(e.stat(follow_symlinks=False).st_mode)
                    entries.append((os.fsencode(e.name), e.inode(), dt))
        finally:
            os.close(dfd)
        dh.entries = entries

    def op_opendir(self, r: Req) -> bytes:
        node = self._node(r)
        dh = DirHandle(node)
        self._snapshot(dh)
        fh = self._new_fh()
        self.dirs[fh] = dh
        r.info["fh"] = fh
        return _OPEN_OUT.pack(fh, 0, 0)

    def _dir(self, r: Req, fh: int, offset: int) -> DirHandle:
        dh = self.dirs.get(fh)
        if dh is None:  # opened by a previous instance
            dh = DirHandle(self._node(r))
            self.dirs[fh] = dh
            self._snapshot(dh)
        elif offset == 0:
            self._snapshot(dh)  # rewinddir: see the directory as it is now
        return dh

    def op_readdir(self, r: Req) -> bytes:
        ri = abi.ReadIn.unpack(r.payload)
        dh = self._dir(r, ri.fh, ri.offset)
        out = bytearray()
        for i in range(ri.offset, len(dh.entries)):
            name, ino, dt = dh.entries[i]
            rec = _DIRENT.pack(ino, i + 1, len(name), dt) + name
            rec += b"\0" * (abi.rec_align(len(rec)) - len(rec))
            if len(out) + len(rec) > ri.size:
                break
            out += rec
        r.info.update(offset=ri.offset, count=len(dh.entries))
        return bytes(out)

    def op_readdirplus(self, r: Req) -> bytes:
        ri = abi.ReadIn.unpack(r.payload)
        dh = self._dir(r, ri.fh, ri.offset)
        out = bytearray()
        zero_entry = b"\0" * abi.EntryOut.nbytes()
        sent = []
        for i in range(ri.offset, len(dh.entries)):
            name, ino, dt = dh.entries[i]
            rec = _DIRENT.pack(ino, i + 1, len(name), dt) + name
            rec += b"\0" * (abi.rec_align(len(rec)) - len(rec))
            if len(out) + len(zero_entry) + len(rec) > ri.size:
                break
            if name in (b".", b".."):
                entry = zero_entry  # nodeid 0: the kernel skips linking these
            else:
                try:
                    node, st = self._child(dh.node, name)
                except OSError:
                    entry = zero_entry  # vanished since the snapshot: no attributes
                else:
                    entry = _ENTRY_HEAD.pack(node.nodeid, node.generation, self.ttl, self.ttl,
                                             self.ttl_ns, self.ttl_ns) + self._attr_from_stat(st)
                    if self.tracing:
                        sent.append([name, node.nodeid, node.generation])
            out += entry + rec
        r.info.update(offset=ri.offset, count=len(dh.entries))
        if self.tracing:
            r.info["entries"] = sent
        return bytes(out)

    def op_releasedir(self, r: Req) -> bytes:
        self.dirs.pop(abi.ReleaseIn.unpack(r.payload).fh, None)
        return b""

    def op_fsyncdir(self, r: Req) -> bytes:
        fd = self.table.open(self._node(r), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        return b""


    # ================================================================ /dev/fuse loop ====
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

    def init_once(self) -> None:
        """Serve requests until INIT is answered (the mount is usable afterwards)."""
        buf = bytearray(BUFSIZE)
        while self.neg.minor == 0:
            n = os.readv(self.fd, [buf])
            reply = self.process(memoryview(buf)[:n])
            if reply is not None:
                self._write(reply)
            if self.stop_reason:
                raise RuntimeError(f"server stopped during INIT: {self.stop_reason}")

    def adopt(self, fd: int, neg: Negotiated, state: dict[str, Any] | None) -> None:
        """Take over a live connection: no INIT, re-queue lost requests, bump the epoch."""
        self.fd = fd
        self.neg = neg
        self.tracer.epoch = neg.epoch
        self.opnames.update(lh.opcode_names(neg.dialect))
        restored = 0
        if state is not None and state.get("table"):
            self.table.restore(state["table"])
            restored = len(self.table.by_id) - 1
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
            self.tracer.write({"event": "notify", "code": name, "result": _errname(e.errno)})
            return f"{name}:{_errname(e.errno)}"

    def _write(self, reply: bytes | list[bytes]) -> None:
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
                self.tracer.write({"event": "reply-error", "errno": _errname(e.errno),
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

    def serve(self) -> str:
        """Serve until unmount, SIGTERM/SIGINT ("stop") or SIGUSR1 ("handover")."""
        buf = bytearray(BUFSIZE)
        view = memoryview(buf)
        readv = os.readv
        fd = self.fd
        process = self.process
        write = self._write
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
            self.tracer.write({"event": "umount-error", "errno": _errname(e.errno)})

    def close(self) -> None:
        for fd in self.files.values():
            try:
                os.close(fd)
            except OSError:
                pass
        self.files.clear()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        self.table.close()
        self.tracer.close()


class _Wakeup(Exception):
    """Raised by the signal handler to leave a blocking read of /dev/fuse."""


def log(msg: str) -> None:
    print(f"nfsconf-ref[{os.getpid()}]: {msg}", file=sys.stderr, flush=True)
