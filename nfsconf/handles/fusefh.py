"""FUSE_LOOKUP_HANDLE fids of RFC v2 (patch 6/6): 0x91 FILEID_FUSE_WITHOUT_PARENT and
0x92 FILEID_FUSE_WITH_PARENT. Not merged anywhere; v3 carries no export patch yet.

The body is an array of::

    struct fuse_file_handle  { u32 size; u32 type; u8 handle[]; };              // sizeof 8
    struct fuse_inode_handle { u64 nodeid; u32 generation; struct fuse_file_handle fh; };

C layout of one fuse_inode_handle (x86-64, host order = little-endian):

    offset  0  u64 nodeid
    offset  8  u32 generation
    offset 12  u32 fh.size        (fuse_file_handle is 4-aligned, so no gap after generation)
    offset 16  u32 fh.type
    offset 20  u8  fh.handle[fh.size]
    sizeof(struct fuse_inode_handle) == 24: the u64 aligns the struct to 8, so 20 rounds up
    to 24 and the flexible array starts 4 bytes *before* sizeof.

The encoder counts an entry as len = sizeof + fh.size = 24 + size bytes, so each entry here
is nodeid, generation, size, type, handle bytes, then 4 `pad` bytes (the sizeof slack after
the handle; kept as read, zero when we encode). 0x92 holds the parent entry right after the
child's, at offset 24 + child size, as `fuse_fh_fuse_to_parent` computes total_len.
Handle sizes are limited to FUSE_MAX_HANDLE_SZ (128); the v2 kernel itself only keeps
1..max_handle_sz-1 (0 means "no handle", >= max is refused).

The suite's fix 0013 (tests/data/lookup-handle-v2-fixes) keeps this layout but writes nodeid
and generation 0: the server's handle alone names the object (`by_handle_alone`), as the RFC
review asked, so a server that renumbers its nodeids still gives one file one fid.

`*max_len = (len + lenp) >> 2` truncates: when the handle sizes are not a multiple of 4 the
kernel reports 1-3 bytes fewer than it wrote. A fixed encoder rounds up instead, adding 1-3
`fill` bytes to reach a word boundary; the decoder accepts exactly that fill and keeps it.

Known v2 bugs (DESIGN.md), which this codec does *not* follow; `v2_encode_fh()` models the
encoder's output for kernel tests:
- the encoder writes handle[1] at the sizeof stride (offset 24, over the child's handle
  bytes) instead of after the child's entry; its memcpy(&handle[0].fh, fi->fh, len) copies
  24 + size bytes from an 8 + size byte fuse_file_handle (16 bytes over-read, 12 written
  past the entry), and *max_len truncates as above;
- `fuse_fh_fuse_to_parent` steps `fid + len` on a `struct fid *` (len * sizeof(struct fid)
  bytes) and then copies the child's bytes, not the parent's;
- `fuse_fh_fuse_to_dentry` checks and copies only sizeof(struct fuse_file_handle) + size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nfsconf.handles._base import (
    FID_TYPE_NAMES,
    FILEID_FUSE_WITH_PARENT,
    FILEID_FUSE_WITHOUT_PARENT,
    FILEID_INVALID,
    HOST_ORDER,
    MAX_HANDLE_SZ,
    HandleError,
    Printable,
    Reader,
    check_uint,
)
from nfsconf.handles.exportfs import FidBase

FUSE_MAX_HANDLE_SZ = 128
SIZEOF_FUSE_FILE_HANDLE = 8
SIZEOF_FUSE_INODE_HANDLE = 24
HANDLE_OFFSET = 20  # offsetof(struct fuse_inode_handle, fh.handle)
PAD = SIZEOF_FUSE_INODE_HANDLE - HANDLE_OFFSET


@dataclass(frozen=True)
class FuseInodeHandle(Printable):
    """One struct fuse_inode_handle with its server handle bytes."""

    nodeid: int
    generation: int
    fh_type: int
    handle: bytes
    pad: bytes = bytes(PAD)

    def __post_init__(self) -> None:
        check_uint("nodeid", self.nodeid, 64)
        check_uint("generation", self.generation, 32)
        check_uint("fh_type", self.fh_type, 32)
        if len(self.handle) > FUSE_MAX_HANDLE_SZ or len(self.pad) != PAD:
            raise ValueError(f"handle {len(self.handle)} > {FUSE_MAX_HANDLE_SZ} or pad != {PAD}")

    @property
    def length(self) -> int:
        """What the v2 encoder counts: sizeof(struct fuse_inode_handle) + fh.size."""
        return SIZEOF_FUSE_INODE_HANDLE + len(self.handle)

    @property
    def by_handle_alone(self) -> bool:
        """Whether the server's handle alone names the object: nodeid and generation 0
        beside a handle (fix 0013), where the series as posted writes the nodeid."""
        return self.nodeid == 0 and self.generation == 0 and bool(self.handle)

    @property
    def title(self) -> str:
        return "fuse_inode_handle"

    def file_handle(self) -> bytes:
        """The struct fuse_file_handle alone, as the server sent it in fuse_entry_out."""
        head = len(self.handle).to_bytes(4, HOST_ORDER) + self.fh_type.to_bytes(4, HOST_ORDER)
        return head + self.handle

    def encode(self) -> bytes:
        head = self.nodeid.to_bytes(8, HOST_ORDER) + self.generation.to_bytes(4, HOST_ORDER)
        return head + self.file_handle() + self.pad

    @classmethod
    def read(cls, r: Reader, what: str) -> FuseInodeHandle:
        nodeid, gen = r.uint(8, f"{what} nodeid"), r.uint(4, f"{what} generation")
        at = r.offset
        size, fh_type = r.uint(4, f"{what} fh.size"), r.uint(4, f"{what} fh.type")
        if size > FUSE_MAX_HANDLE_SZ:
            raise HandleError(at, f"{what} fh.size {size} exceeds {FUSE_MAX_HANDLE_SZ}")
        if size > r.left:
            raise HandleError(at, f"{what} fh.size {size} larger than the {r.left} bytes left")
        handle = r.take(size, f"{what} handle")
        return cls(nodeid, gen, fh_type, handle, r.take(PAD, f"{what} padding"))

    def fields(self) -> dict[str, Any]:
        return {
            "nodeid": self.nodeid,
            "generation": self.generation,
            "fh_size": len(self.handle),
            "fh_type": self.fh_type,
            "handle": self.handle,
            "pad": self.pad,
        }


@dataclass(frozen=True)
class FuseFid(FidBase):
    """0x91 (inode only) or 0x92 (inode, then its parent)."""

    inode: FuseInodeHandle
    parent: FuseInodeHandle | None = None
    fill: bytes = b""
    flags: int = 0

    def __post_init__(self) -> None:
        if len(self.fill) not in (0, self._fill_len()):
            raise ValueError(f"fill must be 0 or {self._fill_len()} bytes (word boundary)")
        self._check_flags()

    def _fill_len(self) -> int:
        return -self.v2_length % 4

    @property
    def fid_type(self) -> int:
        return FILEID_FUSE_WITHOUT_PARENT if self.parent is None else FILEID_FUSE_WITH_PARENT

    @property
    def v2_length(self) -> int:
        """len + lenp of the v2 encoder: the entries without fill."""
        return self.inode.length + (self.parent.length if self.parent else 0)

    @property
    def v2_max_len(self) -> int:
        """Words the v2 encoder reports: (len + lenp) >> 2, truncating."""
        return self.v2_length >> 2

    def encode(self) -> bytes:
        return self.inode.encode() + (self.parent.encode() if self.parent else b"") + self.fill

    @classmethod
    def decode(cls, fid_type: int, data: bytes, flags: int = 0, base: int = 0) -> FuseFid:
        r = Reader(data, base)
        inode = FuseInodeHandle.read(r, "handle[0]")
        parent = None
        if fid_type == FILEID_FUSE_WITH_PARENT:
            parent = FuseInodeHandle.read(r, "handle[1]")
        fill = -r.pos % 4
        if r.left not in (0, fill):
            raise HandleError(
                r.offset, f"{r.left} extra bytes after {FID_TYPE_NAMES[fid_type]} (fill is {fill})"
            )
        return cls(inode, parent, r.take(r.left, "fill"), flags)

    def fields(self) -> dict[str, Any]:
        out = self._head() | {"inode": self.inode, "parent": self.parent}
        return out | {"fill": self.fill, "v2_max_len": self.v2_max_len}


@dataclass(frozen=True)
class V2Encoding:
    """What the RFC v2 encoder hands back: type, *max_len in words, and those words."""

    fid_type: int
    max_len: int
    data: bytes
    overflow: int  # bytes the v2 memcpy writes beyond the caller's max_len * 4 buffer


def v2_encode_fh(
    inode: FuseInodeHandle,
    parent: FuseInodeHandle | None = None,
    max_len: int = MAX_HANDLE_SZ // 4,
    junk: int = 0,
) -> V2Encoding:
    """Model of fuse_encode_fuse_fh() in RFC v2 patch 6/6, bugs included.

    `max_len` is the caller's buffer in words; `junk` is the byte value the memcpy over-reads
    past the server's handle (0 while it stays inside fi->fh's kzalloc'ed max_handle_sz).
    A parent without handle bytes is left out, as the kernel does.
    """
    length = inode.length
    lenp = parent.length if parent is not None and parent.handle else 0
    fid_type = FILEID_FUSE_WITH_PARENT if lenp else FILEID_FUSE_WITHOUT_PARENT
    if max_len * 4 < length + lenp:
        return V2Encoding(FILEID_INVALID, (length + lenp) >> 2, b"", 0)
    end = 12 + length
    buf = bytearray(max(max_len * 4, end + SIZEOF_FUSE_INODE_HANDLE + lenp))
    for at, entry, n in ((0, inode, length), (SIZEOF_FUSE_INODE_HANDLE, parent, lenp)):
        if entry is None or not n:
            continue
        src = entry.file_handle()
        src += bytes([junk]) * (n - len(src))  # memcpy(&h.fh, fi->fh, len) reads len bytes
        buf[at : at + 12] = entry.encode()[:12]
        buf[at + 12 : at + 12 + n] = src
        end = max(end, at + 12 + n)
    words = (length + lenp) >> 2
    return V2Encoding(fid_type, words, bytes(buf[: words * 4]), max(0, end - max_len * 4))
