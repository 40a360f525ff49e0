"""Directory handles of the reference server: OPENDIR takes a snapshot of the listing,
READDIR and READDIRPLUS page through it by offset.

A snapshot is the listing at OPENDIR (or at offset 0 again: rewinddir), so offsets stay
valid while the directory changes; an fh of a previous server instance gets a fresh one.
READDIRPLUS records are laid out as the connection's protocol says: on RFC v2 LOOKUP_HANDLE
the entry carries the handle header the series added to fuse_entry_out and, after it, the
entry's handle bytes (the layout of the suite's fix 0012: lookup_handle.V2).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from . import abi
from . import lookup_handle as lh
from .abi import Op
from .nodes import Node, mode_to_dtype
from .ops import Passthrough
from .request import Handler, Req

_ENTRY_HEAD = abi.EntryOut.HEAD
_DIRENT = abi.DIRENT_HEAD
_OPEN_OUT = abi.OpenOut.FMT


@dataclass
class DirHandle:
    node: Node
    entries: list[tuple[bytes, int, int]] = field(default_factory=list)  # name, ino, dtype


class Dirs:
    """OPENDIR, READDIR, READDIRPLUS, RELEASEDIR, FSYNCDIR over the passthrough's nodes."""

    def __init__(self, ops: Passthrough) -> None:
        self.ops = ops
        self.table = ops.table
        self.tracing = ops.tracing
        self.ttl = ops.ttl
        self.ttl_ns = ops.ttl_ns
        self.dirs: dict[int, DirHandle] = {}

    def handlers(self) -> dict[int, Handler]:
        return {Op.OPENDIR: self.op_opendir, Op.READDIR: self.op_readdir,
                Op.RELEASEDIR: self.op_releasedir, Op.FSYNCDIR: self.op_fsyncdir,
                Op.READDIRPLUS: self.op_readdirplus}

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
        node = self.ops.node(r)
        dh = DirHandle(node)
        self._snapshot(dh)
        fh = self.ops.new_fh()
        self.dirs[fh] = dh
        r.info["fh"] = fh
        return _OPEN_OUT.pack(fh, 0, 0)

    def _dir(self, r: Req, fh: int, offset: int) -> DirHandle:
        dh = self.dirs.get(fh)
        if dh is None:  # opened by a previous instance
            dh = DirHandle(self.ops.node(r))
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
        # RFC v2 changed struct fuse_entry_out itself, so each record's entry grows by the
        # handle header; it is the protocol of the connection, not a choice of this server
        v2 = self.ops.neg.dialect == "v2"
        entry_size = lh.V2.DIRENTPLUS_ENTRY_OUT_SIZE if v2 else abi.EntryOut.nbytes()
        zero_entry = b"\0" * abi.EntryOut.nbytes()
        out = bytearray()
        sent = []
        handle_sizes: dict[str, int] = {}
        handles: list[list[object]] = []  # [nodeid, handle hex]: what each entry carried
        for i in range(ri.offset, len(dh.entries)):
            name, ino, dt = dh.entries[i]
            rec = _DIRENT.pack(ino, i + 1, len(name), dt) + name
            rec += b"\0" * (abi.rec_align(len(rec)) - len(rec))
            if len(out) + entry_size + len(rec) > ri.size:  # no room even without a handle
                break
            fh = None
            node = None
            if name in (b".", b".."):
                entry = zero_entry  # nodeid 0: the kernel skips linking these
            else:
                try:
                    node, st = self.ops.child(dh.node, name)
                except OSError:
                    entry = zero_entry  # vanished since the snapshot: no attributes
                else:
                    entry = _ENTRY_HEAD.pack(node.nodeid, node.generation, self.ttl, self.ttl,
                                             self.ttl_ns, self.ttl_ns) + self.ops.attr_from_stat(st)
                    if v2:
                        fh = self.ops.handles.server_handle(node)
            full = lh.V2.encode_direntplus(entry, rec, fh) if v2 else entry + rec
            if len(out) + len(full) > ri.size:  # the handle bytes do not fit
                if node is not None:  # not sent: the lookup child() counted is given back
                    self.table.forget(node.nodeid, 1)
                break
            out += full
            if node is not None and self.tracing:
                sent.append([name, node.nodeid, node.generation])
                if fh is not None:
                    handle_sizes[os.fsdecode(name)] = len(fh.data)
                    handles.append([node.nodeid, fh.data.hex()])
        r.info.update(offset=ri.offset, count=len(dh.entries))
        if self.tracing:
            r.info["entries"] = sent
            if v2:  # what the records said about handles, for the scenario's evidence
                r.info["direntplus"] = {"entry_out": lh.V2.DIRENTPLUS_ENTRY_OUT_SIZE,
                                        "handle_sizes": handle_sizes}
                r.info["entry_handles"] = handles
        return bytes(out)

    def op_releasedir(self, r: Req) -> bytes:
        self.dirs.pop(abi.ReleaseIn.unpack(r.payload).fh, None)
        return b""

    def op_fsyncdir(self, r: Req) -> bytes:
        fd = self.table.open(self.ops.node(r), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        return b""

