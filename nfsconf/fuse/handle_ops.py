"""The reference server's side of FUSE_LOOKUP_HANDLE (RFC v2 and v3), as a Server mixin.

Active only when INIT negotiated a dialect, which needs a kernel offering
FUSE_HAS_LOOKUP_HANDLE; none on this machine does, so the byte-level tests drive these
handlers through Server.process. Wire layouts live in lookup_handle.py.

The server's handle is the backing file's own handle (type i32, length u8, bytes), padded
with zeros to --handle-size; hostile zero-handle / oversize-handle send 0 / 129 bytes.
"""

from __future__ import annotations

import errno
import os
import struct
from typing import TYPE_CHECKING, Any

from . import abi
from . import lookup_handle as lh
from .nodes import Node, StaleNode
from .request import NO_REPLY, Req

if TYPE_CHECKING:
    from .nodes import NodeTable
    from .server import Config, Negotiated

_OUT = abi.OutHeader.FMT


class LookupHandleOps:
    """Handlers for opcode 54 (v2 LOOKUP_HANDLE / v3 COMPOUND), 55 and 56."""

    cfg: Config
    neg: Negotiated
    table: NodeTable
    tracing: bool
    ttl: int
    ttl_ns: int
    files: dict[int, int]
    handlers: dict[int, Any]
    opnames: dict[int, str]

    if TYPE_CHECKING:  # provided by Server
        def _node(self, r: Req) -> Node: ...
        def _child(self, parent: Node, name: bytes) -> tuple[Node, os.stat_result]: ...
        def _entry(self, node: Node, st: os.stat_result, r: Req, nodeid: int | None = None,
                   generation: int | None = None) -> bytes: ...
        def _lookup_dot(self, r: Req, node: Node, name: bytes) -> object: ...
        def _stat(self, node: Node) -> os.stat_result: ...
        def _statx_out(self, st: os.stat_result) -> bytes: ...
        def _new_fh(self) -> int: ...

    def server_handle(self, node: Node) -> lh.FileHandle:
        """This server's LOOKUP_HANDLE handle: the backing handle (after the instance's salt
        with --handle-salt instance), filled with a pattern to --handle-size (or to the size
        an `hsN` name asks for): a handle the kernel truncates or moves shows in its bytes."""
        size = self.handle_sizes.get(node.nodeid, self.cfg.handle_size)
        raw = self.salt + struct.pack("<iB", node.htype, len(node.hdata)) + node.hdata
        raw = raw[:size]  # too small a size loses identity: the caller's choice
        data = raw + bytes((i * 37 + 11) & 0xFF for i in range(len(raw), size))
        if self.cfg.hostile == "zero-handle":
            data = b""
        elif self.cfg.hostile == "oversize-handle":
            data = data + b"\xff" * (lh.FUSE_MAX_HANDLE_SZ + 1 - len(data))
        return lh.FileHandle(data)

    def node_from_handle(self, fh: lh.FileHandle) -> Node:
        salt = len(self.salt)
        if len(fh.data) < salt + 5 or fh.data[:salt] != self.salt:
            raise OSError(errno.ESTALE, "handle too short or of another server instance")
        htype, n = struct.unpack_from("<iB", fh.data, salt)
        hdata = fh.data[salt + 5:salt + 5 + n]
        if self.table.mode == "stable":
            return self.table.get(self.table.stable_id(htype, hdata))
        for node in self.table.by_id.values():
            if node.htype == htype and node.hdata == hdata:
                return node
        raise StaleNode(0, "volatile server does not know this handle")

    def op_dialect(self, r: Req) -> object:
        d = self.neg.dialect
        if d == "v2" and r.opcode == lh.V2.OPCODE_LOOKUP_HANDLE:
            return self.op_lookup_handle_v2(r)
        if d == "v3" and r.opcode == lh.V3.OPCODE_COMPOUND:
            return self.op_compound_v3(r)
        if d == "v3" and r.opcode == lh.V3.OPCODE_LOOKUP_HANDLE:
            return self.op_lookup_handle_v3(r)[0]
        if d == "v3" and r.opcode == lh.V3.OPCODE_MKOBJ_HANDLE:
            return self.op_mkobj_handle_v3(r)[0]
        raise OSError(errno.ENOSYS, "not implemented")

    def op_lookup_handle_v2(self, r: Req) -> bytes:
        name, parent_fh = lh.V2.decode_lookup_request(bytes(r.payload))
        r.info["name"] = name
        r.info["parent_handle"] = parent_fh.data.hex() if parent_fh else None
        parent = self._node(r)
        if name in (b".", b".."):
            entry = self._lookup_dot(r, parent, name)
            if entry is NO_REPLY:
                return NO_REPLY  # type: ignore[return-value]
            node = self.table.get(abi.EntryOut.unpack(entry).nodeid)  # type: ignore[arg-type]
        else:
            node, st = self._child(parent, name)
            entry = self._entry(node, st, r)
        return entry + self._v2_wire(self.server_handle(node), r)  # type: ignore[operator]

    def op_lookup_handle_v3(self, r: Req) -> tuple[bytes, Node]:
        name, parent_fh = lh.V3.decode_lookup_request(bytes(r.payload), r.extlen)
        r.info["name"] = name
        parent = self.node_from_handle(parent_fh) if parent_fh and r.nodeid == 0 else self._node(r)
        if name == b".":
            node = parent
            self.table.looked_up(node)
        else:
            node, _st = self._child(parent, name)
        fh = self.server_handle(node)
        r.info["reply"] = {"nodeid": node.nodeid, "generation": node.generation,
                           "handle": fh.data.hex()}
        return lh.V3.encode_entry_reply(node.nodeid, node.generation, fh, self.ttl,
                                        self.ttl_ns), node

    def op_mkobj_handle_v3(self, r: Req) -> tuple[bytes, Node, int]:
        ci, name, _parent_fh = lh.V3.decode_mkobj_request(bytes(r.payload), r.extlen)
        r.info["name"] = name
        parent = self._node(r)
        flags = (ci.flags & ~(os.O_NOCTTY | os.O_APPEND)) | os.O_CREAT | os.O_CLOEXEC
        fd = os.open(name, flags, ci.mode & 0o7777, dir_fd=self.table.fd(parent))
        node, _st = self._child(parent, name)
        fh = self.server_handle(node)
        return lh.V3.encode_entry_reply(node.nodeid, node.generation, fh, self.ttl,
                                        self.ttl_ns), node, fd

    def op_compound_v3(self, r: Req) -> bytes:
        """Run each sub-request; STATX/OPEN after a *_HANDLE op act on that op's result node
        (the v3 kernel sends FUSE_ROOT_ID as their nodeid because it cannot know it yet)."""
        head, subs = lh.V3.decode_compound_request(bytes(r.payload))
        replies: list[bytes] = []
        prev: Node | None = None
        pending_fd: int | None = None
        ops = []
        for hdr, payload in subs:
            sub = Req((hdr.len, hdr.opcode, hdr.unique, hdr.nodeid, r.uid, r.gid, r.pid,
                       hdr.total_extlen, 0), payload)
            ops.append(self.opnames.get(hdr.opcode, hdr.opcode))
            try:
                if hdr.opcode == lh.V3.OPCODE_LOOKUP_HANDLE:
                    body, prev = self.op_lookup_handle_v3(sub)
                elif hdr.opcode == lh.V3.OPCODE_MKOBJ_HANDLE:
                    body, prev, pending_fd = self.op_mkobj_handle_v3(sub)
                elif hdr.opcode == abi.OP["STATX"] and prev is not None:
                    body = self._statx_out(self._stat(prev))
                elif hdr.opcode == abi.OP["OPEN"] and prev is not None:
                    fh = self._new_fh()
                    if pending_fd is None:
                        pending_fd = self.table.open(prev, os.O_RDONLY | os.O_CLOEXEC)
                    self.files[fh] = pending_fd
                    pending_fd = None
                    body = abi.OpenOut.FMT.pack(fh, 0, 0)
                else:
                    result = self.handlers.get(hdr.opcode, self.op_dialect)(sub)
                    body = b"" if result is NO_REPLY else result
                replies.append(_OUT.pack(_OUT.size + len(body), 0, hdr.unique) + body)
            except OSError as e:
                replies.append(_OUT.pack(_OUT.size, -(e.errno or errno.EIO), hdr.unique))
                if head["flags"] & lh.V3.COMPOUND_ATOMIC:
                    break
        if pending_fd is not None:
            os.close(pending_fd)
        r.info["compound"] = ops
        return lh.V3.encode_compound_reply(replies)

    def _v2_handle(self, node: Node, r: Req) -> bytes:
        """RFC v2 appends the server's handle to every entry reply (CREATE, MKNOD, MKDIR,
        SYMLINK, LINK as well as LOOKUP_HANDLE); nothing without that dialect."""
        if self.neg.dialect != "v2":
            return b""
        return self._v2_wire(self.server_handle(node), r)

    def _v2_wire(self, fh: lh.FileHandle, r: Req) -> bytes:
        """The fuse_file_handle as sent; hostile short-handle sends a quarter of the bytes
        its size field announces."""
        wire = lh.V2.encode_file_handle(fh)
        if self.cfg.hostile == "short-handle":
            wire = wire[:lh.V2.FH_HEAD.size + len(fh.data) // 4]
            r.info["announced_size"] = len(fh.data)
        r.info["handle"] = wire[lh.V2.FH_HEAD.size:].hex()
        return wire
