"""The reference server's own LOOKUP_HANDLE handles: how one is made, found again and sent.

The server's handle is the backing file's own handle (type i32, length u8, bytes), after the
instance's salt with --handle-salt instance, filled with a pattern to --handle-size (cut to a
size too small to hold it, the bytes are remembered by the instance, which finds the object by
them until it ends); hostile
zero-handle / oversize-handle send 0 / 129 bytes, short-handle sends a quarter of them.
"""

from __future__ import annotations

import errno
import os
import re
import struct

from . import lookup_handle as lh
from .config import Config, Negotiated
from .nodes import Node, NodeTable
from .request import Req

_HS_NAME = re.compile(rb"hs(\d{1,3})")


class Handles:
    """Mint and decode this server instance's handles; RFC v2 entry replies carry them."""

    def __init__(self, cfg: Config, neg: Negotiated, table: NodeTable) -> None:
        self.cfg = cfg
        self.neg = neg
        self.table = table
        self.sizes: dict[int, int] = {}  # nodeid -> handle size asked by its name
        # handles too short to hold the backing handle -> the backing handle: this instance
        # still finds the object by them, as a server must when the kernel sends nothing else
        self.short: dict[bytes, tuple[int, bytes]] = {}
        self.salt = os.urandom(4) if cfg.handle_salt == "instance" else b""

    def size_by_name(self, node: Node, name: bytes) -> None:
        """Test hook (--handle-size-by-name): an object named hsN gets a handle of N bytes."""
        if self.cfg.handle_size_by_name and (m := _HS_NAME.fullmatch(name)):
            self.sizes[node.nodeid] = min(int(m.group(1)), lh.FUSE_MAX_HANDLE_SZ + 1)

    def server_handle(self, node: Node) -> lh.FileHandle:
        """This server's LOOKUP_HANDLE handle: the backing handle (after the instance's salt
        with --handle-salt instance), filled with a pattern to --handle-size (or to the size
        an `hsN` name asks for): a handle the kernel truncates or moves shows in its bytes."""
        size = self.sizes.get(node.nodeid, self.cfg.handle_size)
        raw = self.salt + struct.pack("<iB", node.htype, len(node.hdata)) + node.hdata
        if len(raw) > size:  # the bytes cannot name the file: this instance remembers them
            raw = raw[:size]
            self.short[raw] = (node.htype, node.hdata)
        data = raw + bytes((i * 37 + 11) & 0xFF for i in range(len(raw), size))
        if self.cfg.hostile == "zero-handle":
            data = b""
        elif self.cfg.hostile == "oversize-handle":
            data = data + b"\xff" * (lh.FUSE_MAX_HANDLE_SZ + 1 - len(data))
        return lh.FileHandle(data)

    def node_from_handle(self, fh: lh.FileHandle) -> Node:
        if (backing := self.short.get(fh.data)) is not None:  # two of one size: the last
            return self._node_of(*backing)
        salt = len(self.salt)
        if len(fh.data) < salt + 5 or fh.data[:salt] != self.salt:
            raise OSError(errno.ESTALE, "handle too short or of another server instance")
        htype, n = struct.unpack_from("<iB", fh.data, salt)
        return self._node_of(htype, fh.data[salt + 5:salt + 5 + n])

    def _node_of(self, htype: int, hdata: bytes) -> Node:
        if self.table.mode == "stable":
            return self.table.get(self.table.stable_id(htype, hdata))
        # the known node of that file, or (a handle of an earlier instance: an unsalted
        # handle outlives the nodeid counter of its instance) the file found again
        return self.table.reopen(htype, hdata)

    def v2_handle(self, node: Node, r: Req) -> bytes:
        """RFC v2 appends the server's handle to every entry reply (CREATE, MKNOD, MKDIR,
        SYMLINK, LINK as well as LOOKUP_HANDLE); nothing without that dialect."""
        if self.neg.dialect != "v2":
            return b""
        return self.v2_wire(self.server_handle(node), r)

    def v2_wire(self, fh: lh.FileHandle, r: Req) -> bytes:
        """The fuse_file_handle as sent; hostile short-handle sends a quarter of the bytes
        its size field announces."""
        wire = lh.V2.encode_file_handle(fh)
        if self.cfg.hostile == "short-handle":
            wire = wire[:lh.V2.FH_HEAD.size + len(fh.data) // 4]
            r.info["announced_size"] = len(fh.data)
        r.info["handle"] = wire[lh.V2.FH_HEAD.size:].hex()
        return wire
