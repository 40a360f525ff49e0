"""The reference server's passthrough: every FUSE operation run against the source directory.

Each ``op_*`` handler turns one decoded request into its reply body (or raises OSError for
an errno reply); the helpers they share (node, child, entry, stat, new_fh, ...) are public,
for the LOOKUP_HANDLE operations and the directory handles built on them.
"""

from __future__ import annotations

import errno
import os
import stat
import time

from . import abi
from . import sysutil as su
from .abi import Op
from .config import Config, Negotiated
from .handles import Handles
from .hostile import Hostile
from .nodes import Node, NodeTable, StaleNode
from .request import NO_REPLY, Handler, Req

_ENTRY_HEAD = abi.EntryOut.HEAD
_ATTR = abi.Attr.FMT
_O_STRIP = os.O_CREAT | os.O_EXCL | os.O_NOCTTY | os.O_APPEND
# hot-path decoders: raw struct reads instead of dataclasses for the decode-path opcodes
_GETATTR_IN = abi.GetattrIn.FMT
_FORGET_IN = abi.ForgetIn.FMT
_OPEN_IN = abi.OpenIn.FMT
_FH_ONLY = abi.ForgetIn.FMT  # the leading u64 fh of release_in / flush_in / read_in
_OPEN_OUT = abi.OpenOut.FMT


class Passthrough:
    """The operations over the NodeTable, with the open files they hand out (``files``)."""

    def __init__(self, cfg: Config, table: NodeTable, neg: Negotiated, handles: Handles,
                 tracing: bool) -> None:
        self.cfg = cfg
        self.table = table
        self.neg = neg
        self.handles = handles
        self.hostile = Hostile(cfg.hostile, table)
        self.tracing = tracing
        self.files: dict[int, int] = {}  # fh -> backing fd
        self.fh_counter = 0
        self.ttl = int(cfg.timeout)
        self.ttl_ns = int((cfg.timeout - self.ttl) * 1e9)
        os.umask(0)  # the kernel already applied the caller's umask to every mode it sends

    def handlers(self) -> dict[int, Handler]:
        return {
            Op.LOOKUP: self.op_lookup, Op.FORGET: self.op_forget, Op.GETATTR: self.op_getattr,
            Op.SETATTR: self.op_setattr, Op.READLINK: self.op_readlink,
            Op.SYMLINK: self.op_symlink, Op.MKNOD: self.op_mknod, Op.MKDIR: self.op_mkdir,
            Op.UNLINK: self.op_unlink, Op.RMDIR: self.op_rmdir, Op.RENAME: self.op_rename,
            Op.LINK: self.op_link, Op.OPEN: self.op_open, Op.READ: self.op_read,
            Op.WRITE: self.op_write, Op.STATFS: self.op_statfs, Op.RELEASE: self.op_release,
            Op.FSYNC: self.op_fsync, Op.FLUSH: self.op_flush, Op.ACCESS: self.op_access,
            Op.CREATE: self.op_create, Op.BATCH_FORGET: self.op_batch_forget,
            Op.RENAME2: self.op_rename2, Op.STATX: self.op_statx,
        }

    def close_files(self) -> None:
        for fd in self.files.values():
            try:
                os.close(fd)
            except OSError:
                pass
        self.files.clear()

    # ================================================================ helpers ===========
    def name(self, r: Req, offset: int = 0) -> bytes:
        data = bytes(r.payload[offset:])
        end = data.find(b"\0")
        name = data if end < 0 else data[:end]
        if self.tracing:
            r.info["name"] = name
            if end < 0:  # the protocol says NUL-terminated; the kernel under test did not
                r.info["name_unterminated"] = data.hex()
        return name

    def attr_from_stat(self, st: os.stat_result) -> bytes:
        return _ATTR.pack(st.st_ino, st.st_size, st.st_blocks, int(st.st_atime),
                          int(st.st_mtime), int(st.st_ctime), st.st_atime_ns % 1_000_000_000,
                          st.st_mtime_ns % 1_000_000_000, st.st_ctime_ns % 1_000_000_000,
                          st.st_mode, st.st_nlink, st.st_uid, st.st_gid, st.st_rdev,
                          st.st_blksize, 0)

    def entry(self, node: Node, st: os.stat_result, r: Req, nodeid: int | None = None,
               generation: int | None = None) -> bytes:
        nid = node.nodeid if nodeid is None else nodeid
        gen = node.generation if generation is None else generation
        if self.tracing:
            r.info["reply"] = {"nodeid": nid, "generation": gen, "ino": st.st_ino}
        return _ENTRY_HEAD.pack(nid, gen, self.ttl, self.ttl, self.ttl_ns, self.ttl_ns) + \
            self.attr_from_stat(st)

    def child(self, parent: Node, name: bytes) -> tuple[Node, os.stat_result]:
        """Find ``name`` in ``parent`` on the source and return its node (lookup count +1)."""
        pfd = self.table.fd(parent)
        st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
        # Always ask for the handle: ext4 reuses inode numbers, the handle's generation tells
        # a new file from an old one that still has a node here.
        htype, hdata, _mnt = su.name_to_handle_at(pfd, name)
        node = self.table.node_for(htype, hdata, st.st_ino)
        self.table.looked_up(node)
        self.handles.size_by_name(node, name)
        return node, st

    def node(self, r: Req) -> Node:
        return self.table.get(r.nodeid)

    def stat(self, node: Node) -> os.stat_result:
        return os.fstat(self.table.fd(node))

    def proc(self, node: Node) -> str:
        return f"/proc/self/fd/{self.table.fd(node)}"

    def new_fh(self) -> int:
        # instance epoch in the high bits: a successor never mistakes an old fh for its own
        self.fh_counter += 1
        return self.neg.epoch << 40 | self.fh_counter

    def file_fd(self, fh: int, r: Req, flags: int = os.O_RDWR) -> int:
        fd = self.files.get(fh)
        if fd is None:  # opened by a previous server instance: reopen by handle
            node = self.node(r)
            fd = self.table.open(node, (flags & ~_O_STRIP) | os.O_CLOEXEC)
            self.files[fh] = fd
            r.info["reopened_fh"] = fh
        return fd

    # ================================================================ FORGET ============
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
        name = self.name(r)
        if name in (b".", b"..") and self.hostile.withholds(r):
            return NO_REPLY  # never answered, whether or not the nodeid is still known
        parent = self.node(r)
        if name in (b".", b".."):
            return self.lookup_dot(r, parent, name)
        node, st = self.child(parent, name)
        return self.entry(node, st, r)

    def lookup_dot(self, r: Req, node: Node, name: bytes) -> object:
        """LOOKUP(nodeid, ".") and (nodeid, ".."): how the kernel decodes export handles.
        Where a --hostile mode lies, its answer goes out instead of the truth (hostile.py)."""
        if self.hostile.withholds(r):
            return NO_REPLY
        if name == b"..":
            if node is self.table.root:
                target, st = node, self.stat(node)
            else:
                pst = os.stat("..", dir_fd=self.table.fd(node), follow_symlinks=False)
                if pst.st_ino == self.table.root.ino:
                    target, st = self.table.root, pst
                else:
                    target, st = self.child(node, b"..")
                    return self.entry(target, st, r)
            self.table.looked_up(target)
            return self.entry(target, st, r)
        if self.cfg.fault == "lookup-dot":
            raise RuntimeError("injected fault (--fault lookup-dot)")
        st = self.table.fresh_stat(node)
        if st.st_nlink == 0 and not stat.S_ISDIR(st.st_mode):
            raise StaleNode(node.nodeid, "backing file was unlinked")
        lie = self.hostile.dot(r, node, st)
        if lie is not None:
            return self.entry(lie.node, lie.st, r, generation=lie.generation)
        self.table.looked_up(node)
        return self.entry(node, st, r)

    # ================================================================ attributes ========
    def op_getattr(self, r: Req) -> bytes:
        flags, fh = _GETATTR_IN.unpack_from(r.payload)
        if flags & abi.GETATTR_FH and fh in self.files:
            st = os.fstat(self.files[fh])
        else:
            st = self.stat(self.node(r))
        return abi.AttrOut.HEAD.pack(self.ttl, self.ttl_ns) + self.attr_from_stat(st)

    def op_setattr(self, r: Req) -> bytes:
        sa = abi.SetattrIn.unpack(r.payload)
        node = self.node(r)
        v = sa.valid
        path = self.proc(node)
        r.info["valid"] = v
        if v & abi.FATTR_MODE:
            os.chmod(path, stat.S_IMODE(sa.mode))
        if v & (abi.FATTR_UID | abi.FATTR_GID):
            uid = sa.uid if v & abi.FATTR_UID else -1
            gid = sa.gid if v & abi.FATTR_GID else -1
            su.fchown_empty(self.table.fd(node), uid, gid)
        if v & abi.FATTR_SIZE:
            if v & abi.FATTR_FH:
                os.ftruncate(self.file_fd(sa.fh, r), sa.size)
            else:
                os.truncate(path, sa.size)
        if v & (abi.FATTR_ATIME | abi.FATTR_MTIME):
            st = self.stat(node)
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
        st = self.stat(node)
        return abi.AttrOut.HEAD.pack(self.ttl, self.ttl_ns) + self.attr_from_stat(st)

    def op_statx(self, r: Req) -> bytes:
        sx = abi.StatxIn.unpack(r.payload)
        if sx.getattr_flags & abi.GETATTR_FH and sx.fh in self.files:
            st = os.fstat(self.files[sx.fh])
        else:
            st = self.stat(self.node(r))
        return self.statx_out(st)

    def statx_out(self, st: os.stat_result) -> bytes:
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
        path = self.proc(self.node(r))
        os.stat(path, follow_symlinks=False)  # F_OK, and ESTALE/ENOENT as they come
        if mask and not os.access(path, mask):
            raise OSError(errno.EACCES, "access denied")
        return b""

    def op_readlink(self, r: Req) -> bytes:
        return os.fsencode(os.readlink("", dir_fd=self.table.fd(self.node(r))))

    def op_statfs(self, r: Req) -> bytes:
        sv = os.statvfs(self.table.root_fd)
        return abi.Kstatfs(sv.f_blocks, sv.f_bfree, sv.f_bavail, sv.f_files, sv.f_ffree,
                           sv.f_bsize, sv.f_namemax, sv.f_frsize).pack()

    # ================================================================ namespace =========
    def made(self, r: Req, parent: Node, name: bytes) -> bytes:
        node, st = self.child(parent, name)
        if r.uid or r.gid:
            su.fchown_empty(self.table.fd(node), r.uid, r.gid)
            st = self.stat(node)
        return self.entry(node, st, r) + self.handles.v2_handle(node, r)

    def op_mknod(self, r: Req) -> bytes:
        mi = abi.MknodIn.unpack(r.payload)
        name = self.name(r, abi.MknodIn.nbytes())
        parent = self.node(r)
        os.mknod(name, mi.mode, mi.rdev, dir_fd=self.table.fd(parent))
        return self.made(r, parent, name)

    def op_mkdir(self, r: Req) -> bytes:
        mi = abi.MkdirIn.unpack(r.payload)
        name = self.name(r, abi.MkdirIn.nbytes())
        parent = self.node(r)
        os.mkdir(name, mi.mode & 0o7777, dir_fd=self.table.fd(parent))
        return self.made(r, parent, name)

    def op_symlink(self, r: Req) -> bytes:
        name, target = abi.split_names(r.payload, 2)
        r.info["name"] = name
        r.info["target"] = target
        parent = self.node(r)
        os.symlink(target, name, dir_fd=self.table.fd(parent))
        return self.made(r, parent, name)

    def op_link(self, r: Req) -> bytes:
        old = abi.LinkIn.unpack(r.payload).oldnodeid
        name = self.name(r, abi.LinkIn.nbytes())
        r.info["oldnodeid"] = old
        src = self.table.get(old)
        parent = self.node(r)
        os.link(self.proc(src), name, dst_dir_fd=self.table.fd(parent), follow_symlinks=True)
        node, st = self.child(parent, name)
        return self.entry(node, st, r) + self.handles.v2_handle(node, r)

    def op_unlink(self, r: Req) -> bytes:
        name = self.name(r)
        os.unlink(name, dir_fd=self.table.fd(self.node(r)))
        return b""

    def op_rmdir(self, r: Req) -> bytes:
        name = self.name(r)
        os.rmdir(name, dir_fd=self.table.fd(self.node(r)))
        return b""

    def _rename(self, r: Req, newdir: int, flags: int, off: int) -> bytes:
        old, new = abi.split_names(r.payload[off:], 2)
        r.info.update(name=old, newname=new, newdir=newdir, flags=flags)
        src = self.table.fd(self.node(r))
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
        node = self.node(r)
        fd = self.table.open(node, (flags & ~_O_STRIP) | os.O_CLOEXEC)
        fh = self.new_fh()
        self.files[fh] = fd
        if self.tracing:
            r.info["fh"] = fh
        # A read-only open has nothing to flush and this server keeps no locks: spare the
        # kernel the synchronous FLUSH on close (FOPEN_NOFLUSH, 7.35).
        oflags = abi.FOPEN_NOFLUSH if flags & os.O_ACCMODE == os.O_RDONLY else 0
        return _OPEN_OUT.pack(fh, oflags, 0)

    def op_create(self, r: Req) -> bytes:
        ci = abi.CreateIn.unpack(r.payload)
        name = self.name(r, abi.CreateIn.nbytes())
        parent = self.node(r)
        flags = (ci.flags & ~(os.O_NOCTTY | os.O_APPEND)) | os.O_CREAT | os.O_CLOEXEC
        fd = os.open(name, flags, ci.mode & 0o7777, dir_fd=self.table.fd(parent))
        try:
            entry = self.made(r, parent, name)
        except BaseException:
            os.close(fd)
            raise
        fh = self.new_fh()
        self.files[fh] = fd
        r.info["fh"] = fh
        return entry + _OPEN_OUT.pack(fh, 0, 0)

    def op_read(self, r: Req) -> list[bytes]:
        ri = abi.ReadIn.unpack(r.payload)
        fd = self.file_fd(ri.fh, r, ri.flags)
        data = os.pread(fd, ri.size, ri.offset)
        if self.tracing:
            r.info.update(offset=ri.offset, size=ri.size, got=len(data))
        return [data]

    def op_write(self, r: Req) -> bytes:
        wi = abi.WriteIn.unpack(r.payload)
        fd = self.file_fd(wi.fh, r, wi.flags)
        start = abi.WriteIn.nbytes()
        n = os.pwrite(fd, r.payload[start:start + wi.size], wi.offset)
        if self.tracing:
            r.info.update(offset=wi.offset, size=wi.size, wrote=n)
        return abi.WriteOut(n).pack()

    def op_flush(self, r: Req) -> bytes:
        return b""

    def op_fsync(self, r: Req) -> bytes:
        fi = abi.FsyncIn.unpack(r.payload)
        fd = self.file_fd(fi.fh, r, os.O_RDONLY)
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
