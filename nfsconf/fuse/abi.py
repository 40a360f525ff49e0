"""The FUSE kernel ABI (include/uapi/linux/fuse.h, protocol 7.45) as Python structs.

Every wire struct is a dataclass with ``pack()`` / ``unpack(buf, offset)`` built on one
precompiled :class:`struct.Struct`. Padding and reserved arrays are pad bytes (``x``) in
the format, so they are written as zeros and never surface as fields. All integers are
little-endian: FUSE uses host order and this suite only runs on x86-64 / arm64 LE.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, fields
from typing import Any, ClassVar, TypeVar

from .initflags import MAINLINE

KERNEL_VERSION = 7
KERNEL_MINOR_VERSION = 45  # what this server speaks; the negotiated minor is min(kernel, this)
ROOT_ID = 1
MIN_READ_BUFFER = 8192
UNIQUE_RESEND = 1 << 63  # set by the kernel on requests re-queued by FUSE_NOTIFY_RESEND
INT_REQ_BIT = 1  # INTERRUPT requests carry the interrupted unique | 1

# --- opcodes ---------------------------------------------------------------------------
class Op(enum.IntEnum):
    """enum fuse_opcode. The LOOKUP_HANDLE dialects number theirs apart (lookup_handle):
    the proposal moves, and 54..56 mean different things in v2 and v3."""

    LOOKUP = 1
    FORGET = 2
    GETATTR = 3
    SETATTR = 4
    READLINK = 5
    SYMLINK = 6
    MKNOD = 8
    MKDIR = 9
    UNLINK = 10
    RMDIR = 11
    RENAME = 12
    LINK = 13
    OPEN = 14
    READ = 15
    WRITE = 16
    STATFS = 17
    RELEASE = 18
    FSYNC = 20
    SETXATTR = 21
    GETXATTR = 22
    LISTXATTR = 23
    REMOVEXATTR = 24
    FLUSH = 25
    INIT = 26
    OPENDIR = 27
    READDIR = 28
    RELEASEDIR = 29
    FSYNCDIR = 30
    GETLK = 31
    SETLK = 32
    SETLKW = 33
    ACCESS = 34
    CREATE = 35
    INTERRUPT = 36
    BMAP = 37
    DESTROY = 38
    IOCTL = 39
    POLL = 40
    NOTIFY_REPLY = 41
    BATCH_FORGET = 42
    FALLOCATE = 43
    READDIRPLUS = 44
    RENAME2 = 45
    LSEEK = 46
    COPY_FILE_RANGE = 47
    SETUPMAPPING = 48
    REMOVEMAPPING = 49
    SYNCFS = 50
    TMPFILE = 51
    STATX = 52
    COPY_FILE_RANGE_64 = 53
    CUSE_INIT = 4096


# plain int <-> str views of Op, for callers that want no enum
OPCODES: dict[int, str] = {op.value: op.name for op in Op}
OP: dict[str, int] = {op.name: op.value for op in Op}

# --- notifications (fuse_out_header.error carries the code, unique = 0) ----------------
NOTIFY_CODES: dict[int, str] = {
    1: "POLL", 2: "INVAL_INODE", 3: "INVAL_ENTRY", 4: "STORE", 5: "RETRIEVE", 6: "DELETE",
    7: "RESEND", 8: "INC_EPOCH", 9: "PRUNE",
}
NOTIFY_RESEND = 7
NOTIFY_INC_EPOCH = 8

# --- INIT flags: bits 0..31 travel in flags, 32..63 in flags2 (needs INIT_EXT) ---------
# Names by protocol minor (a bit means different things at different minors): initflags.
INIT = {name: 1 << bit for bit, (name, _since) in MAINLINE.items()}


# --- misc flag constants -----------------------------------------------------------------
FATTR_MODE, FATTR_UID, FATTR_GID, FATTR_SIZE = 1 << 0, 1 << 1, 1 << 2, 1 << 3
FATTR_ATIME, FATTR_MTIME, FATTR_FH = 1 << 4, 1 << 5, 1 << 6
FATTR_ATIME_NOW, FATTR_MTIME_NOW, FATTR_LOCKOWNER, FATTR_CTIME = 1 << 7, 1 << 8, 1 << 9, 1 << 10
FATTR_KILL_SUIDGID = 1 << 11
FOPEN_DIRECT_IO, FOPEN_KEEP_CACHE, FOPEN_NONSEEKABLE, FOPEN_CACHE_DIR = 1, 2, 4, 8
FOPEN_STREAM, FOPEN_NOFLUSH = 16, 32
GETATTR_FH = 1
FSYNC_FDATASYNC = 1
FUSE_EXT_GROUPS = 32


def rec_align(n: int) -> int:
    """FUSE_REC_ALIGN: variable-length records are padded to 8 bytes."""
    return (n + 7) & ~7


T = TypeVar("T", bound="WireStruct")


class WireStruct:
    """Base for fixed-size wire structs: the dataclass fields in order == the format items."""

    FMT: ClassVar[struct.Struct]
    _names: ClassVar[tuple[str, ...]]

    @classmethod
    def _field_names(cls) -> tuple[str, ...]:
        names = cls.__dict__.get("_names")
        if names is None:
            names = tuple(f.name for f in fields(cls))  # type: ignore[arg-type]
            cls._names = names
        return names

    @classmethod
    def nbytes(cls) -> int:
        return cls.FMT.size

    def pack(self) -> bytes:
        return self.FMT.pack(*(getattr(self, n) for n in self._field_names()))

    @classmethod
    def unpack(cls: type[T], buf: bytes | bytearray | memoryview, offset: int = 0) -> T:
        if len(buf) - offset < cls.FMT.size:
            raise ValueError(f"{cls.__name__}: need {cls.FMT.size} bytes, have {len(buf) - offset}")
        return cls(*cls.FMT.unpack_from(buf, offset))

    def asdict(self) -> dict[str, Any]:
        return {n: getattr(self, n) for n in self._field_names()}


def _s(fmt: str) -> struct.Struct:
    return struct.Struct("<" + fmt)


@dataclass
class InHeader(WireStruct):
    FMT = _s("IIQQIIIHH")
    len: int
    opcode: int
    unique: int
    nodeid: int
    uid: int
    gid: int
    pid: int
    total_extlen: int = 0  # extension length in 8-byte units (7.38)
    padding: int = 0


@dataclass
class OutHeader(WireStruct):
    FMT = _s("IiQ")
    len: int
    error: int  # negative errno, or the notify code when unique == 0
    unique: int


@dataclass
class Attr(WireStruct):
    FMT = _s("QQQQQQIIIIIIIIII")
    ino: int = 0
    size: int = 0
    blocks: int = 0
    atime: int = 0
    mtime: int = 0
    ctime: int = 0
    atimensec: int = 0
    mtimensec: int = 0
    ctimensec: int = 0
    mode: int = 0
    nlink: int = 0
    uid: int = 0
    gid: int = 0
    rdev: int = 0
    blksize: int = 0
    flags: int = 0


@dataclass
class EntryOut(WireStruct):
    """fuse_entry_out: nodeid, generation, timeouts, then a fuse_attr."""

    HEAD: ClassVar[struct.Struct] = _s("QQQQII")
    FMT = struct.Struct("<" + HEAD.format.lstrip("<") + Attr.FMT.format.lstrip("<"))
    nodeid: int
    generation: int
    entry_valid: int
    attr_valid: int
    entry_valid_nsec: int
    attr_valid_nsec: int
    attr: Attr

    def pack(self) -> bytes:
        return self.HEAD.pack(self.nodeid, self.generation, self.entry_valid, self.attr_valid,
                              self.entry_valid_nsec, self.attr_valid_nsec) + self.attr.pack()

    @classmethod
    def unpack(cls, buf: bytes | bytearray | memoryview, offset: int = 0) -> EntryOut:
        if len(buf) - offset < cls.FMT.size:
            raise ValueError(f"EntryOut: need {cls.FMT.size} bytes, have {len(buf) - offset}")
        head = cls.HEAD.unpack_from(buf, offset)
        return cls(*head, Attr.unpack(buf, offset + cls.HEAD.size))


@dataclass
class AttrOut(WireStruct):
    HEAD: ClassVar[struct.Struct] = _s("QI4x")
    FMT = struct.Struct("<" + HEAD.format.lstrip("<") + Attr.FMT.format.lstrip("<"))
    attr_valid: int
    attr_valid_nsec: int
    attr: Attr

    def pack(self) -> bytes:
        return self.HEAD.pack(self.attr_valid, self.attr_valid_nsec) + self.attr.pack()

    @classmethod
    def unpack(cls, buf: bytes | bytearray | memoryview, offset: int = 0) -> AttrOut:
        if len(buf) - offset < cls.FMT.size:
            raise ValueError(f"AttrOut: need {cls.FMT.size} bytes, have {len(buf) - offset}")
        a, n = cls.HEAD.unpack_from(buf, offset)
        return cls(a, n, Attr.unpack(buf, offset + cls.HEAD.size))


@dataclass
class InitIn(WireStruct):
    """fuse_init_in; flags2 is only meaningful when flags has INIT_EXT (7.36)."""

    FMT = _s("IIIII44x")
    major: int
    minor: int
    max_readahead: int
    flags: int
    flags2: int = 0

    @classmethod
    def unpack(cls, buf: bytes | bytearray | memoryview, offset: int = 0) -> InitIn:
        avail = len(buf) - offset
        if avail >= cls.FMT.size:
            return cls(*cls.FMT.unpack_from(buf, offset))
        if avail >= 16:  # kernels before 7.36 send the short form
            return cls(*struct.unpack_from("<IIII", buf, offset))
        if avail >= 8:  # 7.5 and older: major/minor only
            return cls(*struct.unpack_from("<II", buf, offset), 0, 0)
        raise ValueError(f"InitIn: need at least 8 bytes, have {avail}")

    @property
    def flags64(self) -> int:
        if self.flags & INIT["INIT_EXT"]:
            return self.flags | (self.flags2 << 32)
        return self.flags


@dataclass
class InitOut(WireStruct):
    """fuse_init_out (64 bytes). ``max_handle_sz`` is RFC v2's use of the first unused u16."""

    FMT = _s("IIIIHHIIHHIIHH20x")
    major: int
    minor: int
    max_readahead: int
    flags: int
    max_background: int = 0
    congestion_threshold: int = 0
    max_write: int = 0
    time_gran: int = 1
    max_pages: int = 0
    map_alignment: int = 0
    flags2: int = 0
    max_stack_depth: int = 0
    request_timeout: int = 0
    max_handle_sz: int = 0  # RFC v2 only; zero (= unused) in 7.45

    @staticmethod
    def split_flags(flags64: int) -> tuple[int, int]:
        return flags64 & 0xFFFFFFFF, flags64 >> 32

    @property
    def flags64(self) -> int:
        return self.flags | (self.flags2 << 32)


@dataclass
class GetattrIn(WireStruct):
    FMT = _s("I4xQ")
    getattr_flags: int
    fh: int = 0


@dataclass
class SetattrIn(WireStruct):
    FMT = _s("I4xQQQQQQIIIIIIII")
    valid: int
    fh: int = 0
    size: int = 0
    lock_owner: int = 0
    atime: int = 0
    mtime: int = 0
    ctime: int = 0
    atimensec: int = 0
    mtimensec: int = 0
    ctimensec: int = 0
    mode: int = 0
    unused4: int = 0
    uid: int = 0
    gid: int = 0
    unused5: int = 0


@dataclass
class OpenIn(WireStruct):
    FMT = _s("II")
    flags: int
    open_flags: int = 0


@dataclass
class CreateIn(WireStruct):
    FMT = _s("IIII")
    flags: int
    mode: int
    umask: int = 0
    open_flags: int = 0


@dataclass
class OpenOut(WireStruct):
    FMT = _s("QIi")
    fh: int
    open_flags: int = 0
    backing_id: int = 0


@dataclass
class ReleaseIn(WireStruct):
    FMT = _s("QIIQ")
    fh: int
    flags: int = 0
    release_flags: int = 0
    lock_owner: int = 0


@dataclass
class FlushIn(WireStruct):
    FMT = _s("Q8xQ")
    fh: int
    lock_owner: int = 0


@dataclass
class ReadIn(WireStruct):
    FMT = _s("QQIIQI4x")
    fh: int
    offset: int
    size: int
    read_flags: int = 0
    lock_owner: int = 0
    flags: int = 0


@dataclass
class WriteIn(WireStruct):
    FMT = _s("QQIIQI4x")
    fh: int
    offset: int
    size: int
    write_flags: int = 0
    lock_owner: int = 0
    flags: int = 0


@dataclass
class WriteOut(WireStruct):
    FMT = _s("I4x")
    size: int


@dataclass
class Kstatfs(WireStruct):
    FMT = _s("QQQQQIII4x24x")
    blocks: int
    bfree: int
    bavail: int
    files: int
    ffree: int
    bsize: int
    namelen: int
    frsize: int


@dataclass
class FsyncIn(WireStruct):
    FMT = _s("QI4x")
    fh: int
    fsync_flags: int = 0


@dataclass
class AccessIn(WireStruct):
    FMT = _s("I4x")
    mask: int


@dataclass
class MknodIn(WireStruct):
    FMT = _s("IIII")
    mode: int
    rdev: int
    umask: int = 0
    padding: int = 0


@dataclass
class MkdirIn(WireStruct):
    FMT = _s("II")
    mode: int
    umask: int = 0


@dataclass
class RenameIn(WireStruct):
    FMT = _s("Q")
    newdir: int


@dataclass
class Rename2In(WireStruct):
    FMT = _s("QI4x")
    newdir: int
    flags: int = 0


@dataclass
class LinkIn(WireStruct):
    FMT = _s("Q")
    oldnodeid: int


@dataclass
class ForgetIn(WireStruct):
    FMT = _s("Q")
    nlookup: int


@dataclass
class ForgetOne(WireStruct):
    FMT = _s("QQ")
    nodeid: int
    nlookup: int


@dataclass
class BatchForgetIn(WireStruct):
    FMT = _s("I4x")
    count: int


@dataclass
class InterruptIn(WireStruct):
    FMT = _s("Q")
    unique: int


@dataclass
class StatxIn(WireStruct):
    FMT = _s("I4xQII")
    getattr_flags: int
    fh: int = 0
    sx_flags: int = 0
    sx_mask: int = 0


@dataclass
class Statx(WireStruct):
    """fuse_statx (256 bytes); times are flattened to sec/nsec pairs."""

    FMT = _s("IIQIIIH2xQQQQ" + "qI4x" * 4 + "IIII112x")
    mask: int = 0
    blksize: int = 0
    attributes: int = 0
    nlink: int = 0
    uid: int = 0
    gid: int = 0
    mode: int = 0
    ino: int = 0
    size: int = 0
    blocks: int = 0
    attributes_mask: int = 0
    atime_sec: int = 0
    atime_nsec: int = 0
    btime_sec: int = 0
    btime_nsec: int = 0
    ctime_sec: int = 0
    ctime_nsec: int = 0
    mtime_sec: int = 0
    mtime_nsec: int = 0
    rdev_major: int = 0
    rdev_minor: int = 0
    dev_major: int = 0
    dev_minor: int = 0


@dataclass
class StatxOut(WireStruct):
    HEAD: ClassVar[struct.Struct] = _s("QII16x")
    FMT = struct.Struct("<" + HEAD.format.lstrip("<") + Statx.FMT.format.lstrip("<"))
    attr_valid: int
    attr_valid_nsec: int
    flags: int
    stat: Statx

    def pack(self) -> bytes:
        return self.HEAD.pack(self.attr_valid, self.attr_valid_nsec, self.flags) + self.stat.pack()

    @classmethod
    def unpack(cls, buf: bytes | bytearray | memoryview, offset: int = 0) -> StatxOut:
        if len(buf) - offset < cls.FMT.size:
            raise ValueError(f"StatxOut: need {cls.FMT.size} bytes, have {len(buf) - offset}")
        a, n, f = cls.HEAD.unpack_from(buf, offset)
        return cls(a, n, f, Statx.unpack(buf, offset + cls.HEAD.size))


@dataclass
class ExtHeader(WireStruct):
    """fuse_ext_header: one request extension (size includes this header, 8-aligned)."""

    FMT = _s("II")
    size: int
    type: int


DIRENT_HEAD = _s("QQII")  # ino, off, namelen, type


@dataclass
class Dirent:
    ino: int
    off: int
    type: int  # DT_* (mode >> 12)
    name: bytes

    def pack(self) -> bytes:
        raw = DIRENT_HEAD.pack(self.ino, self.off, len(self.name), self.type) + self.name
        return raw + b"\0" * (rec_align(len(raw)) - len(raw))

    @classmethod
    def unpack(cls, buf: bytes | bytearray | memoryview, offset: int = 0) -> tuple[Dirent, int]:
        """Return (dirent, bytes consumed including padding)."""
        ino, off, namelen, typ = DIRENT_HEAD.unpack_from(buf, offset)
        start = offset + DIRENT_HEAD.size
        if start + namelen > len(buf):
            raise ValueError("Dirent: name runs past the buffer")
        name = bytes(buf[start:start + namelen])
        return cls(ino, off, typ, name), rec_align(DIRENT_HEAD.size + namelen)


@dataclass
class DirentPlus:
    entry: EntryOut
    dirent: Dirent

    def pack(self) -> bytes:
        return self.entry.pack() + self.dirent.pack()

    @classmethod
    def unpack(cls, buf: bytes | bytearray | memoryview,
               offset: int = 0) -> tuple[DirentPlus, int]:
        entry = EntryOut.unpack(buf, offset)
        d, used = Dirent.unpack(buf, offset + EntryOut.nbytes())
        return cls(entry, d), EntryOut.nbytes() + used


def split_names(payload: bytes | bytearray | memoryview, count: int) -> list[bytes]:
    """Split ``count`` NUL-terminated names off the front of a payload."""
    out: list[bytes] = []
    data = bytes(payload)
    pos = 0
    for _ in range(count):
        end = data.find(b"\0", pos)
        if end < 0:
            raise ValueError("name is not NUL-terminated")
        out.append(data[pos:end])
        pos = end + 1
    return out


def pack_reply(unique: int, error: int = 0, *payload: bytes) -> bytes:
    """A complete reply: fuse_out_header (error as a negative errno) + payload."""
    body = b"".join(payload)
    return OutHeader.FMT.pack(OutHeader.FMT.size + len(body), -abs(error), unique) + body


def pack_notify(code: int, payload: bytes = b"") -> bytes:
    """An unsolicited notification: unique 0 and the code in the error field."""
    return OutHeader.FMT.pack(OutHeader.FMT.size + len(payload), code, 0) + payload


def pack_request(opcode: int, unique: int, nodeid: int, payload: bytes = b"", uid: int = 0,
                 gid: int = 0, pid: int = 0, total_extlen: int = 0) -> bytes:
    """A request as the kernel writes it (used by unit tests and compound encoding)."""
    return InHeader(InHeader.FMT.size + len(payload), opcode, unique, nodeid, uid, gid, pid,
                    total_extlen).pack() + payload
