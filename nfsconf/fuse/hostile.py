"""The hostile modes of LOOKUP(nodeid, "."): the lies a FUSE server can tell the kernel's
export-handle decode (--hostile). The passthrough's "." lookup asks here first.

The LOOKUP_HANDLE modes (zero-handle, oversize-handle, short-handle) spoil the handles
themselves and live with them (handles.py).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

from . import sysutil as su
from .nodes import Node, NodeTable
from .request import Req


@dataclass
class Lie:
    """The entry to answer instead of the truth (``generation`` None: the node's own)."""

    node: Node
    st: os.stat_result
    generation: int | None = None


class Hostile:
    """One --hostile mode (or None: honest) and the state its lies need."""

    def __init__(self, mode: str | None, table: NodeTable) -> None:
        self.mode = mode
        self.table = table
        self.flip: dict[int, int] = {}

    def withholds(self, r: Req) -> bool:
        """no-reply: LOOKUP of "." and ".." is never answered."""
        if self.mode != "no-reply":
            return False
        r.info["hostile"] = "no-reply"
        return True

    def dot(self, r: Req, node: Node, st: os.stat_result) -> Lie | None:
        """The lie for LOOKUP(node, "."), with the lookup counted; None: tell the truth.
        The root is never lied about."""
        hostile = self.mode
        if hostile is None or node is self.table.root:
            return None
        if hostile == "dot-wrong-nodeid":
            alias = self.table.add_alias(self.table.fresh_id(), 0, node)
            self.table.looked_up(alias)
            r.info["hostile"] = f"answered nodeid {alias.nodeid:#x} for {node.nodeid:#x}"
            return Lie(alias, st)
        if hostile == "generation-flip":
            flip = self.flip.get(node.nodeid, 0) + 1
            self.flip[node.nodeid] = flip
            gen = (node.generation + flip) & 0xFFFFFFFF
            self.table.looked_up(node)
            r.info["hostile"] = f"generation {node.generation} -> {gen}"
            return Lie(node, st, gen)
        if hostile == "reuse-other-file":
            decoy = self.decoy(node, st)
            if decoy is not None:
                other, ost = decoy
                alias = self.table.add_alias(node.nodeid, node.generation, other)
                self.table.looked_up(alias)
                r.info["hostile"] = f"nodeid {node.nodeid:#x} now names ino {ost.st_ino}"
                return Lie(alias, ost)
        return None

    def decoy(self, node: Node, st: os.stat_result) -> tuple[Node, os.stat_result] | None:
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
