"""Node table of the reference server: which nodeid names which backing file.

A node is identified on the source filesystem by its own file handle (name_to_handle_at),
so the server can always reopen it with open_by_handle_at, after a rename, a FORGET, or in a
new server instance. How nodeids are chosen is the policy under test:

* ``volatile``: a counter; a forgotten nodeid goes to a free list and is handed out again to
  the next new file, like a careless server. The generation stays 0 (``zero``) or counts the
  reuses of that nodeid (``bump``).
* ``stable``: the nodeid is the backing handle itself when it fits in 64 bits (ext2/3/4
  handles are FILEID_INO32_GEN: ino and i_generation, 8 bytes), otherwise a 63-bit hash of
  the handle recorded in a persistent map under the state directory. Either way any instance
  of the server can turn a nodeid it never saw back into the file.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
import struct
from collections import OrderedDict
from dataclasses import dataclass, field

from . import abi
from . import sysutil as su

FILEID_INO32_GEN = 1
_INO32_GEN = struct.Struct("=II")  # the ext4 handle body: inode number, i_generation


class StaleNode(OSError):
    """The nodeid names nothing this server can reach: the kernel gets ESTALE."""

    def __init__(self, nodeid: int, why: str = "unknown nodeid") -> None:
        super().__init__(errno.ESTALE, f"nodeid {nodeid:#x}: {why}")


@dataclass(eq=False)
class Node:
    nodeid: int
    generation: int
    htype: int
    hdata: bytes
    ino: int
    nlookup: int = 0
    fd: int = -1  # cached O_PATH fd, -1 when closed
    hbuf: bytes | None = field(default=None, repr=False)
    alias: bool = False  # a hostile-mode stand-in, not indexed by inode

    def handle_buffer(self) -> bytes:
        if self.hbuf is None:
            self.hbuf = su.make_handle_buffer(self.htype, self.hdata)
        return self.hbuf


class NodeTable:
    """nodeid <-> backing file, with FORGET accounting and a bounded O_PATH fd cache."""

    def __init__(self, source: str, nodeid_mode: str = "stable", generation_mode: str = "zero",
                 state_dir: str | None = None, fd_cap: int | None = None) -> None:
        if nodeid_mode not in ("volatile", "stable"):
            raise ValueError(f"nodeid mode must be volatile or stable, not {nodeid_mode!r}")
        if generation_mode not in ("zero", "bump"):
            raise ValueError(f"generation mode must be zero or bump, not {generation_mode!r}")
        self.source = os.path.realpath(source)
        self.mode = nodeid_mode
        self.gen_mode = generation_mode
        # open_by_handle_at refuses an O_PATH mount_fd (EBADF), so the root is opened for reading
        self.root_fd = os.open(self.source, os.O_RDONLY | os.O_DIRECTORY)
        st = os.fstat(self.root_fd)
        self.dev = st.st_dev
        htype, hdata, _mnt = su.name_to_handle_at(self.root_fd, b"", su.AT_EMPTY_PATH)
        self.root = Node(abi.ROOT_ID, 0, htype, hdata, st.st_ino, 1, self.root_fd)
        self.by_id: dict[int, Node] = {abi.ROOT_ID: self.root}
        self.by_ino: dict[int, Node] = {st.st_ino: self.root}
        # volatile allocator state
        self.next_id = 2
        self.free_ids: list[int] = []
        self.gens: dict[int, int] = {}
        # stable codec: compact when the source fs hands out 8-byte ino32+gen handles
        self.compact = htype == FILEID_INO32_GEN and len(hdata) == _INO32_GEN.size
        self.map_path: str | None = None
        self.map: dict[int, tuple[int, bytes]] = {}
        if self.mode == "stable" and not self.compact:
            self._load_map(state_dir)
        self.fd_cap = fd_cap or max(256, su.raise_nofile_limit() // 2)
        self.fds: OrderedDict[int, Node] = OrderedDict()
        self._last: tuple[Node, os.stat_result] | None = None
        self.journal_path: str | None = None
        self._journal_fd = -1

    # --- journal of volatile nodeids -----------------------------------------------------
    def open_journal(self, path: str, fresh: bool) -> None:
        """Append every change of the volatile table to PATH (FRESH: a new connection, so
        the journal starts empty). Each event is one unbuffered write: a SIGKILL loses none."""
        os.makedirs(os.path.dirname(path), exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC | (os.O_TRUNC if fresh else 0)
        self._journal_fd = os.open(path, flags, 0o600)
        self.journal_path = path

    def _log(self, event: str, *values: object) -> None:
        if self._journal_fd >= 0:
            os.write(self._journal_fd, (json.dumps([event, *values]) + "\n").encode())

    def replay_journal(self) -> int:
        """Rebuild the table of the instance that wrote the journal (it died without handing
        its table over); returns how many nodes it held."""
        assert self.journal_path is not None
        fd, self._journal_fd = self._journal_fd, -1  # replaying must not journal again
        try:
            with open(self.journal_path) as f:
                for line in f:
                    event, *v = json.loads(line)
                    if event == "new":
                        self._replay_new(*v)
                    elif event == "lookup" and (node := self.by_id.get(v[0])) is not None:
                        node.nlookup += v[1]
                    elif event == "forget":
                        self.forget(v[0], v[1])
        finally:
            self._journal_fd = fd
        return len(self.by_id) - 1

    def _replay_new(self, nodeid: int, gen: int, htype: int, hhex: str, ino: int) -> None:
        # the allocator's choice again: a freed nodeid taken back, or the counter moved on
        if nodeid in self.free_ids:
            self.free_ids.remove(nodeid)
        self.next_id = max(self.next_id, nodeid + 1)
        if gen:
            self.gens[nodeid] = gen
        node = Node(nodeid, gen, htype, bytes.fromhex(hhex), ino)
        self.by_id[nodeid] = node
        self.by_ino[ino] = node

    # --- stable codec ------------------------------------------------------------------
    def _load_map(self, state_dir: str | None) -> None:
        if state_dir is None:
            key = hashlib.sha1(self.source.encode()).hexdigest()[:16]
            state_dir = os.path.join("/var/tmp/nfsconf-ref", key)
        os.makedirs(state_dir, exist_ok=True)
        self.map_path = os.path.join(state_dir, "nodeids.jsonl")
        if os.path.exists(self.map_path):
            with open(self.map_path) as f:
                for line in f:
                    rec = json.loads(line)
                    self.map[int(rec["nodeid"])] = (int(rec["htype"]), bytes.fromhex(rec["h"]))

    def stable_id(self, htype: int, hdata: bytes) -> int:
        if self.compact and htype == FILEID_INO32_GEN and len(hdata) == _INO32_GEN.size:
            ino, gen = _INO32_GEN.unpack(hdata)
            return gen << 32 | ino
        digest = hashlib.blake2b(struct.pack("<i", htype) + hdata, digest_size=8).digest()
        nodeid = int.from_bytes(digest, "little") >> 1 | 1 << 62  # never 0 or ROOT_ID
        known = self.map.get(nodeid)
        if known is None:
            self.map[nodeid] = (htype, hdata)
            if self.map_path:
                with open(self.map_path, "a") as f:
                    f.write(json.dumps({"nodeid": nodeid, "htype": htype, "h": hdata.hex()}) + "\n")
        elif known != (htype, hdata):
            raise OSError(errno.EOVERFLOW, f"nodeid hash collision at {nodeid:#x}")
        return nodeid

    def stable_handle(self, nodeid: int) -> tuple[int, bytes] | None:
        """Invert stable_id without any table lookup when the codec is compact."""
        if self.compact:
            return FILEID_INO32_GEN, _INO32_GEN.pack(nodeid & 0xFFFFFFFF, nodeid >> 32)
        return self.map.get(nodeid)

    # --- allocation ----------------------------------------------------------------------
    def _new_volatile(self) -> tuple[int, int]:
        if self.free_ids:
            nodeid = self.free_ids.pop()
            gen = self.gens.get(nodeid, 0)
            if self.gen_mode == "bump":
                gen += 1
                self.gens[nodeid] = gen
            return nodeid, gen
        nodeid = self.next_id
        self.next_id += 1
        return nodeid, 0

    def node_for(self, htype: int, hdata: bytes, ino: int) -> Node:
        """The node of a backing file found by name: existing one, or a new one."""
        node = self.by_ino.get(ino)
        if node is not None and node.hdata == hdata:
            return node
        if self.mode == "stable":
            nodeid, gen = self.stable_id(htype, hdata), 0
            node = self.by_id.get(nodeid)
            if node is not None and not node.alias:
                self.by_ino[ino] = node
                return node
        else:
            nodeid, gen = self._new_volatile()
            self._log("new", nodeid, gen, htype, hdata.hex(), ino)
        node = Node(nodeid, gen, htype, hdata, ino)
        self.by_id[nodeid] = node
        self.by_ino[ino] = node
        return node

    def reopen(self, htype: int, hdata: bytes) -> Node:
        """The node of a backing file known only by its handle (one of an earlier server
        instance): the known node of that file, or a new one as if found by name."""
        fd, st = self._open_backing(0, su.make_handle_buffer(htype, hdata))
        os.close(fd)
        return self.node_for(htype, hdata, st.st_ino)

    def add_alias(self, nodeid: int, generation: int, target: Node) -> Node:
        """Bind ``nodeid`` to ``target``'s file (hostile modes); replaces what it named."""
        old = self.by_id.get(nodeid)
        if old is not None and old is not self.root:
            self._drop(old)
        node = Node(nodeid, generation, target.htype, target.hdata, target.ino, alias=True)
        self.by_id[nodeid] = node
        return node

    def fresh_id(self) -> int:
        """A nodeid nothing uses (for hostile replies that must not collide)."""
        if self.mode == "volatile":
            return self._new_volatile()[0]
        nodeid = 1 << 61 | self.next_id
        self.next_id += 1
        return nodeid

    # --- resolution ----------------------------------------------------------------------
    def get(self, nodeid: int) -> Node:
        """The node for a nodeid from the kernel; stable ids are resolved even if unknown."""
        node = self.by_id.get(nodeid)
        if node is not None:
            return node
        if self.mode != "stable":
            raise StaleNode(nodeid, "not in this server's table (volatile)")
        h = self.stable_handle(nodeid)
        if h is None:
            raise StaleNode(nodeid, "no backing handle for this stable nodeid")
        htype, hdata = h
        probe = Node(nodeid, 0, htype, hdata, 0)
        fd, st = self._open_backing(nodeid, probe.handle_buffer())
        probe.ino = st.st_ino
        self._last = (probe, st)
        self.by_id[nodeid] = probe
        self.by_ino.setdefault(st.st_ino, probe)
        self._cache_fd(probe, fd)
        return probe

    def _open_backing(self, nodeid: int, handle_buffer: bytes) -> tuple[int, os.stat_result]:
        """An O_PATH fd of the backing file behind a handle, and its stat; StaleNode (for
        NODEID) where the source no longer has it or it lies outside the source fs."""
        try:
            fd = su.open_by_handle_at(self.root_fd, handle_buffer, os.O_PATH | os.O_NOFOLLOW)
        except OSError as e:
            if e.errno in (errno.ESTALE, errno.ENOENT, errno.EINVAL):
                raise StaleNode(nodeid, f"open_by_handle_at: {e.strerror}") from None
            raise
        st = os.fstat(fd)
        if st.st_dev != self.dev:
            os.close(fd)
            raise StaleNode(nodeid, "handle resolves outside the source filesystem")
        return fd, st

    def fresh_stat(self, node: Node) -> os.stat_result:
        """fstat of the node, reusing the one get() just took when it resolved the node."""
        last = self._last
        self._last = None
        if last is not None and last[0] is node:
            return last[1]
        return os.fstat(self.fd(node))

    def fd(self, node: Node) -> int:
        """An O_PATH fd of the node's backing file (cached, reopened by handle on demand)."""
        if node.fd >= 0:
            return node.fd
        try:
            fd = su.open_by_handle_at(self.root_fd, node.handle_buffer(), os.O_PATH | os.O_NOFOLLOW)
        except OSError as e:
            if e.errno in (errno.ESTALE, errno.ENOENT):
                raise StaleNode(node.nodeid, "backing file is gone") from None
            raise
        self._cache_fd(node, fd)
        return fd

    def open(self, node: Node, flags: int) -> int:
        """A real (non-O_PATH) fd of the node's file, straight from its handle."""
        try:
            return su.open_by_handle_at(self.root_fd, node.handle_buffer(), flags)
        except OSError as e:
            if e.errno == errno.ESTALE:
                raise StaleNode(node.nodeid, "backing file is gone") from None
            raise

    def _cache_fd(self, node: Node, fd: int) -> None:
        node.fd = fd
        self.fds[node.nodeid] = node
        while len(self.fds) > self.fd_cap:
            _nid, old = self.fds.popitem(last=False)
            if old is not self.root and old.fd >= 0:
                os.close(old.fd)
                old.fd = -1

    # --- lookup counts -------------------------------------------------------------------
    def looked_up(self, node: Node, count: int = 1) -> None:
        node.nlookup += count
        self._log("lookup", node.nodeid, count)

    def forget(self, nodeid: int, count: int) -> bool:
        """Apply a FORGET; return True if the node was dropped."""
        node = self.by_id.get(nodeid)
        if node is None or node is self.root:
            return False
        self._log("forget", nodeid, count)
        node.nlookup -= count
        if node.nlookup > 0:
            return False
        self._drop(node)
        if self.mode == "volatile" and not node.alias:
            self.free_ids.append(nodeid)
        return True

    def _drop(self, node: Node) -> None:
        self.by_id.pop(node.nodeid, None)
        if not node.alias and self.by_ino.get(node.ino) is node:
            del self.by_ino[node.ino]
        if self.fds.pop(node.nodeid, None) is not None and node.fd >= 0:
            os.close(node.fd)
        node.fd = -1

    # --- graceful handover ---------------------------------------------------------------
    def snapshot(self) -> dict[str, object]:
        nodes = [[n.nodeid, n.generation, n.htype, n.hdata.hex(), n.ino, n.nlookup, n.alias]
                 for n in self.by_id.values() if n is not self.root]
        return {"mode": self.mode, "next_id": self.next_id, "free_ids": self.free_ids,
                "gens": {str(k): v for k, v in self.gens.items()}, "nodes": nodes}

    def restore(self, snap: dict[str, object]) -> None:
        if snap.get("mode") != self.mode:
            raise ValueError(f"state is for nodeid mode {snap.get('mode')}, server is {self.mode}")
        self.next_id = int(snap["next_id"])  # type: ignore[arg-type]
        self.free_ids = [int(x) for x in snap["free_ids"]]  # type: ignore[attr-defined]
        self.gens = {int(k): int(v) for k, v in snap["gens"].items()}  # type: ignore[attr-defined]
        for nodeid, gen, htype, hhex, ino, nlookup, alias in snap["nodes"]:  # type: ignore[attr-defined]
            node = Node(nodeid, gen, htype, bytes.fromhex(hhex), ino, nlookup, alias=alias)
            self.by_id[nodeid] = node
            if not alias:
                self.by_ino[ino] = node

    def close(self) -> None:
        if self._journal_fd >= 0:
            os.close(self._journal_fd)
            self._journal_fd = -1
        for node in list(self.fds.values()):
            if node.fd >= 0 and node is not self.root:
                os.close(node.fd)
                node.fd = -1
        self.fds.clear()
        os.close(self.root_fd)


def mode_to_dtype(mode: int) -> int:
    return stat.S_IFMT(mode) >> 12
