"""The reference server's side of FUSE_LOOKUP_HANDLE (RFC v2 and v3): its operations.

Active only when INIT negotiated a dialect, which needs a kernel offering
FUSE_HAS_LOOKUP_HANDLE (the RFC v2 series, `nfsconf kernel build`); the byte-level
tests also drive these handlers through Server.process. Wire layouts live in
lookup_handle.py, the server's handles (and the hostile modes that spoil them) in
handles.py.
"""

from __future__ import annotations

import errno
import os

from . import abi
from . import lookup_handle as lh
from .abi import Op
from .config import Negotiated
from .handles import Handles
from .nodes import Node, StaleNode
from .ops import Passthrough
from .request import NO_REPLY, Handler, Req

_OUT = abi.OutHeader.FMT


class LookupHandleOps:
    """Handlers for opcode 54 (v2 LOOKUP_HANDLE / v3 COMPOUND), 55 and 56, on top of the
    passthrough. A v3 COMPOUND runs its other sub-requests through ``handlers``, the
    server's own dispatch table; ``opnames`` names them in the trace."""

    def __init__(self, ops: Passthrough, handles: Handles, neg: Negotiated,
                 handlers: dict[int, Handler], opnames: dict[int, str]) -> None:
        self.ops = ops
        self.handles = handles
        self.neg = neg
        self.table = ops.table
        self.handlers = handlers
        self.opnames = opnames

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
        if name in (b".", b"..") and self.ops.hostile.withholds(r):
            return NO_REPLY  # type: ignore[return-value]  # before the nodeid is even looked at
        parent = self._named(r, parent_fh)
        if name in (b".", b".."):
            entry = self.ops.lookup_dot(r, parent, name)
            if entry is NO_REPLY:
                return NO_REPLY  # type: ignore[return-value]
            node = self.table.get(abi.EntryOut.unpack(entry).nodeid)  # type: ignore[arg-type]
        else:
            node, st = self.ops.child(parent, name)
            entry = self.ops.entry(node, st, r)
        wire = self.handles.v2_wire(self.handles.server_handle(node), r)
        return entry + wire  # type: ignore[operator]

    def _named(self, r: Req, fh: lh.FileHandle | None) -> Node:
        """The node a v2 LOOKUP_HANDLE names: by its nodeid, or, when this instance does
        not know the nodeid (a restart renumbered it) and the kernel sent the node's
        handle, by that handle: the handle is what outlives a server instance."""
        try:
            return self.ops.node(r)
        except StaleNode as e:
            if fh is None or self.handles.cfg.hostile:
                raise
            node = self.handles.node_from_handle(fh)
            r.info["by_handle"] = f"nodeid {r.nodeid:#x} unknown ({e.strerror}); the " \
                f"handle names nodeid {node.nodeid:#x}"
            return node

    def op_lookup_handle_v3(self, r: Req) -> tuple[bytes, Node]:
        name, parent_fh = lh.V3.decode_lookup_request(bytes(r.payload), r.extlen)
        r.info["name"] = name
        parent = self.handles.node_from_handle(parent_fh) if parent_fh and r.nodeid == 0 \
            else self.ops.node(r)
        if name == b".":
            node = parent
            self.table.looked_up(node)
        else:
            node, _st = self.ops.child(parent, name)
        fh = self.handles.server_handle(node)
        r.info["reply"] = {"nodeid": node.nodeid, "generation": node.generation,
                           "handle": fh.data.hex()}
        return lh.V3.encode_entry_reply(node.nodeid, node.generation, fh, self.ops.ttl,
                                        self.ops.ttl_ns), node

    def op_mkobj_handle_v3(self, r: Req) -> tuple[bytes, Node, int]:
        ci, name, _parent_fh = lh.V3.decode_mkobj_request(bytes(r.payload), r.extlen)
        r.info["name"] = name
        parent = self.ops.node(r)
        flags = (ci.flags & ~(os.O_NOCTTY | os.O_APPEND)) | os.O_CREAT | os.O_CLOEXEC
        fd = os.open(name, flags, ci.mode & 0o7777, dir_fd=self.table.fd(parent))
        node, _st = self.ops.child(parent, name)
        fh = self.handles.server_handle(node)
        return lh.V3.encode_entry_reply(node.nodeid, node.generation, fh, self.ops.ttl,
                                        self.ops.ttl_ns), node, fd

    def op_compound_v3(self, r: Req) -> bytes:
        """Run each sub-request; STATX/OPEN after a *_HANDLE op act on that op's result node
        (the v3 kernel sends FUSE_ROOT_ID as their nodeid because it cannot know it yet)."""
        head, subs = lh.V3.decode_compound_request(bytes(r.payload))
        replies: list[bytes] = []
        prev: Node | None = None
        pending_fd: int | None = None
        names = []
        for hdr, payload in subs:
            sub = Req((hdr.len, hdr.opcode, hdr.unique, hdr.nodeid, r.uid, r.gid, r.pid,
                       hdr.total_extlen, 0), payload)
            names.append(self.opnames.get(hdr.opcode, hdr.opcode))
            try:
                if hdr.opcode == lh.V3.OPCODE_LOOKUP_HANDLE:
                    body, prev = self.op_lookup_handle_v3(sub)
                elif hdr.opcode == lh.V3.OPCODE_MKOBJ_HANDLE:
                    body, prev, pending_fd = self.op_mkobj_handle_v3(sub)
                elif hdr.opcode == Op.STATX and prev is not None:
                    body = self.ops.statx_out(self.ops.stat(prev))
                elif hdr.opcode == Op.OPEN and prev is not None:
                    fh = self.ops.new_fh()
                    if pending_fd is None:
                        pending_fd = self.table.open(prev, os.O_RDONLY | os.O_CLOEXEC)
                    self.ops.files[fh] = pending_fd
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
        r.info["compound"] = names
        return lh.V3.encode_compound_reply(replies)
