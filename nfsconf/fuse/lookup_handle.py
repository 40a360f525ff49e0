"""FUSE_LOOKUP_HANDLE wire dialects. The proposal moves; every dialect lives here, nowhere else.

* RFC v2 (Luis Henriques, 12 Dec 2025, patches 3/6 and 4/6): opcode 54, INIT flag
  ``FUSE_HAS_LOOKUP_HANDLE`` (1<<43) plus ``fuse_init_out.max_handle_sz`` (u16 at offset
  42, <= 128). ``struct fuse_file_handle { u32 size; u32 type; u8 handle[]; }`` is appended
  to ``fuse_entry_out`` in every entry reply (LOOKUP_HANDLE, CREATE, MKNOD, MKDIR, SYMLINK,
  LINK); the parent's handle, when the kernel has one, follows the name as an extra in-arg.
  The kernel accepts a handle only if ``0 < size < max_handle_sz`` (fuse_invalid_file_handle
  checks ``>= FUSE_MAX_HANDLE_SZ``, fuse_iget ``>= max_handle_sz``). Export fids 0x91/0x92
  carry ``struct fuse_inode_handle { u64 nodeid; u32 generation; struct fuse_file_handle fh; }``.
  READDIRPLUS: the series changes ``struct fuse_entry_out`` itself, so ``fuse_direntplus``
  grows by the 8-byte handle header (136-byte entry_out), but as posted FUSE_DIRENTPLUS_SIZE
  counts ``sizeof`` only: no handle bytes fit in a record, and fuse_direntplus_link refuses
  the empty handle that is all such a record can carry. The suite's fix 0012 (as its fixes
  decide the protocol where the series left it open) lays a record out like an entry
  reply: entry_out, its fh.size handle bytes padded to 8, then the fuse_dirent
  (FUSE_DIRENTPLUS_HANDLE_SIZE); this server speaks that layout, which the series as posted
  misparses (its LH-READDIRPLUS fails either way).
* RFC v3 (25 Feb 2026, on top of the compound series v5): ``FUSE_COMPOUND`` 54,
  ``FUSE_LOOKUP_HANDLE`` 55, ``FUSE_MKOBJ_HANDLE`` 56, protocol 7.46, same INIT flag and no
  size field. Reply: ``struct fuse_entry2_out`` then ``struct fuse_file_handle { u16 size;
  u8 handle[]; }`` as a second out-arg (the kernel offers MAX_HANDLE_SZ = 128 bytes for it).
  The parent's handle travels as a ``FUSE_EXT_HANDLE`` (33) request extension. Attributes
  come from a FUSE_STATX sent in the same compound.

Nothing here talks to a kernel; whether the kernel under test offers a dialect is decided
in initflags.lookup_handle_offer (bit 43 belongs to mainline from 7.46 on).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from . import abi

FUSE_HAS_LOOKUP_HANDLE = 1 << 43
FUSE_MAX_HANDLE_SZ = 128  # == MAX_HANDLE_SZ of fs/fhandle.c, used by both dialects


class HandleError(ValueError):
    """Malformed LOOKUP_HANDLE bytes or a handle the kernel would reject."""


@dataclass(frozen=True)
class FileHandle:
    """A server's opaque handle. ``type`` exists only in v2 (zero elsewhere)."""

    data: bytes
    type: int = 0


class V2:
    """RFC v2: LOOKUP_HANDLE = 54, handle appended to fuse_entry_out."""

    NAME = "rfc-v2"
    OPCODE_LOOKUP_HANDLE = 54
    INIT_FLAG = FUSE_HAS_LOOKUP_HANDLE
    MAX_HANDLE_SZ = FUSE_MAX_HANDLE_SZ
    FH_HEAD = struct.Struct("<II")  # size, type
    INIT_OUT_MAX_HANDLE_SZ_OFFSET = 42  # the u16 after request_timeout
    COMPAT_45_ENTRY_OUT_SIZE = 128  # entry_out without the handle, what < 7.45 peers use
    FID_WITHOUT_PARENT = 0x91
    FID_WITH_PARENT = 0x92
    INODE_HANDLE_HEAD = struct.Struct("<QIII")  # nodeid, generation, fh.size, fh.type
    INODE_HANDLE_SIZEOF = 24  # sizeof(struct fuse_inode_handle): 20 bytes padded to 8

    @classmethod
    def encode_file_handle(cls, fh: FileHandle) -> bytes:
        return cls.FH_HEAD.pack(len(fh.data), fh.type) + fh.data

    @classmethod
    def decode_file_handle(cls, buf: bytes, offset: int = 0) -> tuple[FileHandle, int]:
        """Return (handle, bytes used). Checks only that the bytes are there."""
        if len(buf) - offset < cls.FH_HEAD.size:
            raise HandleError("v2 fuse_file_handle: header truncated")
        size, typ = cls.FH_HEAD.unpack_from(buf, offset)
        start = offset + cls.FH_HEAD.size
        if start + size > len(buf):
            raise HandleError(f"v2 fuse_file_handle: size {size} runs past the buffer")
        return FileHandle(bytes(buf[start:start + size]), typ), cls.FH_HEAD.size + size

    @staticmethod
    def kernel_accepts(size: int, max_handle_sz: int) -> bool:
        """The v2 kernel's checks: a handle must be non-empty and strictly below both limits."""
        return 0 < size < min(max_handle_sz, FUSE_MAX_HANDLE_SZ)

    @staticmethod
    def init_reply_valid(max_handle_sz: int) -> bool:
        """process_init_reply enables the op only for 0 < max_handle_sz <= 128."""
        return 0 < max_handle_sz <= FUSE_MAX_HANDLE_SZ

    @classmethod
    def set_init_max_handle_sz(cls, init_out: bytes, size: int) -> bytes:
        if not 0 <= size <= 0xFFFF:
            raise HandleError(f"max_handle_sz {size} does not fit a u16")
        off = cls.INIT_OUT_MAX_HANDLE_SZ_OFFSET
        return init_out[:off] + struct.pack("<H", size) + init_out[off + 2:]

    @classmethod
    def get_init_max_handle_sz(cls, init_out: bytes) -> int:
        return struct.unpack_from("<H", init_out, cls.INIT_OUT_MAX_HANDLE_SZ_OFFSET)[0]

    @classmethod
    def encode_lookup_request(cls, name: bytes, parent: FileHandle | None = None) -> bytes:
        """LOOKUP_HANDLE payload: name, NUL, then the parent's fuse_file_handle if any."""
        out = name + b"\0"
        if parent is not None:
            out += cls.encode_file_handle(parent)
        return out

    @classmethod
    def decode_lookup_request(cls, payload: bytes) -> tuple[bytes, FileHandle | None]:
        end = payload.find(b"\0")
        if end < 0:
            raise HandleError("v2 LOOKUP_HANDLE: name is not NUL-terminated")
        rest = payload[end + 1:]
        if not rest:
            return payload[:end], None
        fh, used = cls.decode_file_handle(rest)
        if used != len(rest):
            raise HandleError(f"v2 LOOKUP_HANDLE: {len(rest) - used} trailing bytes")
        return payload[:end], fh

    @classmethod
    def encode_entry(cls, entry: abi.EntryOut, fh: FileHandle) -> bytes:
        return entry.pack() + cls.encode_file_handle(fh)

    @classmethod
    def decode_entry(cls, buf: bytes) -> tuple[abi.EntryOut, FileHandle]:
        entry = abi.EntryOut.unpack(buf)
        fh, used = cls.decode_file_handle(buf, abi.EntryOut.nbytes())
        if abi.EntryOut.nbytes() + used != len(buf):
            raise HandleError("v2 entry reply: trailing bytes after the handle")
        return entry, fh

    # sizeof(struct fuse_entry_out) with the series: the 128 bytes of 7.45 + the fh header
    DIRENTPLUS_ENTRY_OUT_SIZE = abi.EntryOut.FMT.size + FH_HEAD.size

    @classmethod
    def encode_direntplus(cls, entry: bytes, dirent: bytes, fh: FileHandle | None = None
                          ) -> bytes:
        """One fuse_direntplus record in fix 0012's layout: the 128-byte entry, the handle
        header, the handle bytes padded to 8 (FUSE_DIRENT_ALIGN), then the fuse_dirent
        (padded). No handle (an entry with nodeid 0) is size 0 and no bytes."""
        if len(entry) != abi.EntryOut.FMT.size:
            raise HandleError(f"fuse_entry_out of {len(entry)} bytes, not "
                              f"{abi.EntryOut.FMT.size}")
        data = fh.data if fh is not None else b""
        typ = fh.type if fh is not None else 0
        pad = abi.rec_align(len(data)) - len(data)
        return entry + cls.FH_HEAD.pack(len(data), typ) + data + b"\0" * pad + dirent

    @classmethod
    def decode_direntplus(cls, buf: bytes, offset: int = 0
                          ) -> tuple[abi.EntryOut, FileHandle, abi.Dirent, int]:
        """Parse one record in fix 0012's layout: (entry, handle, dirent, record length);
        the dirent starts after the handle bytes rounded up to 8."""
        if len(buf) - offset < cls.DIRENTPLUS_ENTRY_OUT_SIZE:
            raise HandleError("v2 fuse_direntplus truncated")
        entry = abi.EntryOut.unpack(buf, offset)
        size, typ = cls.FH_HEAD.unpack_from(buf, offset + abi.EntryOut.FMT.size)
        start = offset + cls.DIRENTPLUS_ENTRY_OUT_SIZE
        dirent_at = start + abi.rec_align(size)
        if dirent_at + abi.DIRENT_HEAD.size > len(buf):
            raise HandleError(f"v2 fuse_direntplus truncated (handle size {size})")
        try:
            dirent, used = abi.Dirent.unpack(buf, dirent_at)
        except ValueError as e:
            raise HandleError(f"v2 fuse_direntplus: {e}") from e
        return (entry, FileHandle(bytes(buf[start:start + size]), typ), dirent,
                dirent_at - offset + used)

    @classmethod
    def encode_fid(cls, nodeid: int, generation: int, fh: FileHandle,
                   parent: tuple[int, int, FileHandle] | None = None) -> tuple[int, bytes, int]:
        """Export fid as the v2 encoder lays it out: (fid type, body, *max_len in words).

        Each part is ``fuse_inode_handle`` head (nodeid, generation, fh.size, fh.type) with the
        handle bytes right after (offset 20); the part is counted as sizeof (24) + size bytes.
        The word count reproduces the patch's ``(len + lenp) >> 2`` truncation, which drops up
        to three trailing bytes when the handle size is not a multiple of 4.
        """
        def part(n: int, g: int, h: FileHandle) -> bytes:
            raw = cls.INODE_HANDLE_HEAD.pack(n, g & 0xFFFFFFFF, len(h.data), h.type) + h.data
            want = cls.INODE_HANDLE_SIZEOF + len(h.data)
            return raw + b"\0" * (want - len(raw))

        body = part(nodeid, generation, fh)
        fid_type = cls.FID_WITHOUT_PARENT
        if parent is not None and parent[2].data:
            body += part(*parent)
            fid_type = cls.FID_WITH_PARENT
        return fid_type, body, len(body) >> 2

    @classmethod
    def decode_fid(cls, fid_type: int, body: bytes) -> list[tuple[int, int, FileHandle]]:
        """Parse a 0x91/0x92 body laid out as :meth:`encode_fid` writes it."""
        if fid_type not in (cls.FID_WITHOUT_PARENT, cls.FID_WITH_PARENT):
            raise HandleError(f"not a v2 FUSE fid type: {fid_type:#x}")
        parts: list[tuple[int, int, FileHandle]] = []
        pos = 0
        for _ in range(2 if fid_type == cls.FID_WITH_PARENT else 1):
            if len(body) - pos < cls.INODE_HANDLE_HEAD.size:
                raise HandleError("v2 fid: fuse_inode_handle truncated")
            n, g, size, typ = cls.INODE_HANDLE_HEAD.unpack_from(body, pos)
            start = pos + cls.INODE_HANDLE_HEAD.size
            if start + size > len(body):
                raise HandleError(f"v2 fid: handle size {size} runs past the body")
            parts.append((n, g, FileHandle(bytes(body[start:start + size]), typ)))
            pos += cls.INODE_HANDLE_SIZEOF + size
        return parts


class V3:
    """RFC v3: compound LOOKUP_HANDLE + STATX, MKOBJ_HANDLE, FUSE_EXT_HANDLE extension."""

    NAME = "rfc-v3"
    MIN_MINOR = 46
    OPCODE_COMPOUND = 54
    OPCODE_LOOKUP_HANDLE = 55
    OPCODE_MKOBJ_HANDLE = 56
    INIT_FLAG = FUSE_HAS_LOOKUP_HANDLE
    EXT_HANDLE = 33
    MAX_HANDLE_SZ = FUSE_MAX_HANDLE_SZ
    FH_HEAD = struct.Struct("<H")
    ENTRY2_OUT = struct.Struct("<QQQIIQ")  # nodeid, generation, entry_valid, nsec, flags, spare
    COMPOUND_IN = struct.Struct("<III4xQ")  # count, flags, result_size, (pad), reserved
    COMPOUND_OUT = struct.Struct("<IIQ")  # count, flags, reserved
    COMPOUND_SEPARABLE = 1 << 0
    COMPOUND_ATOMIC = 1 << 1
    MAX_COMPOUND_OPS = 16

    @classmethod
    def encode_file_handle(cls, fh: FileHandle) -> bytes:
        if len(fh.data) > 0xFFFF:
            raise HandleError(f"v3 handle of {len(fh.data)} bytes does not fit a u16 size")
        return cls.FH_HEAD.pack(len(fh.data)) + fh.data

    @classmethod
    def decode_file_handle(cls, buf: bytes, offset: int = 0) -> tuple[FileHandle, int]:
        if len(buf) - offset < cls.FH_HEAD.size:
            raise HandleError("v3 fuse_file_handle: size truncated")
        (size,) = cls.FH_HEAD.unpack_from(buf, offset)
        start = offset + cls.FH_HEAD.size
        if start + size > len(buf):
            raise HandleError(f"v3 fuse_file_handle: size {size} runs past the buffer")
        return FileHandle(bytes(buf[start:start + size])), cls.FH_HEAD.size + size

    @classmethod
    def kernel_accepts(cls, size: int) -> bool:
        """The kernel's reply buffer holds 2 + MAX_HANDLE_SZ bytes; empty means 'no handle'."""
        return 0 < size <= cls.MAX_HANDLE_SZ

    @classmethod
    def encode_ext_handle(cls, fh: FileHandle) -> bytes:
        """A FUSE_EXT_HANDLE extension: fuse_ext_header + fuse_file_handle, 8-aligned."""
        body = cls.encode_file_handle(fh)
        size = abi.rec_align(abi.ExtHeader.nbytes() + len(body))
        raw = abi.ExtHeader(size, cls.EXT_HANDLE).pack() + body
        return raw + b"\0" * (size - len(raw))

    @staticmethod
    def split_extensions(payload: bytes,
                         total_extlen: int) -> tuple[bytes, list[tuple[int, bytes]]]:
        """Split a request payload into (args, [(ext type, ext body)]) using total_extlen."""
        ext_len = total_extlen * 8
        if ext_len > len(payload):
            raise HandleError(f"extensions of {ext_len} bytes exceed the "
                              f"{len(payload)}-byte payload")
        args, ext = payload[:len(payload) - ext_len], payload[len(payload) - ext_len:]
        out: list[tuple[int, bytes]] = []
        pos = 0
        while pos < len(ext):
            hdr = abi.ExtHeader.unpack(ext, pos)
            if hdr.size < abi.ExtHeader.nbytes() or hdr.size % 8 or pos + hdr.size > len(ext):
                raise HandleError(f"bad extension header size {hdr.size}")
            out.append((hdr.type, ext[pos + abi.ExtHeader.nbytes():pos + hdr.size]))
            pos += hdr.size
        return args, out

    @classmethod
    def parent_handle(cls, extensions: list[tuple[int, bytes]]) -> FileHandle | None:
        for typ, body in extensions:
            if typ == cls.EXT_HANDLE:
                return cls.decode_file_handle(body)[0]
        return None

    @classmethod
    def encode_lookup_request(cls, name: bytes,
                              parent: FileHandle | None = None) -> tuple[bytes, int]:
        """(payload, total_extlen) of a LOOKUP_HANDLE sub-request."""
        ext = cls.encode_ext_handle(parent) if parent is not None else b""
        return name + b"\0" + ext, len(ext) // 8

    @classmethod
    def decode_lookup_request(cls, payload: bytes,
                              total_extlen: int) -> tuple[bytes, FileHandle | None]:
        args, exts = cls.split_extensions(payload, total_extlen)
        end = args.find(b"\0")
        if end < 0:
            raise HandleError("v3 LOOKUP_HANDLE: name is not NUL-terminated")
        return args[:end], cls.parent_handle(exts)

    @classmethod
    def encode_mkobj_request(cls, create: abi.CreateIn, name: bytes,
                             parent: FileHandle | None = None) -> tuple[bytes, int]:
        ext = cls.encode_ext_handle(parent) if parent is not None else b""
        return create.pack() + name + b"\0" + ext, len(ext) // 8

    @classmethod
    def decode_mkobj_request(cls, payload: bytes, total_extlen: int
                             ) -> tuple[abi.CreateIn, bytes, FileHandle | None]:
        args, exts = cls.split_extensions(payload, total_extlen)
        create = abi.CreateIn.unpack(args)
        rest = args[abi.CreateIn.nbytes():]
        end = rest.find(b"\0")
        if end < 0:
            raise HandleError("v3 MKOBJ_HANDLE: name is not NUL-terminated")
        return create, rest[:end], cls.parent_handle(exts)

    @classmethod
    def encode_entry2(cls, nodeid: int, generation: int, entry_valid: int = 0,
                      entry_valid_nsec: int = 0, flags: int = 0) -> bytes:
        return cls.ENTRY2_OUT.pack(nodeid, generation, entry_valid, entry_valid_nsec, flags, 0)

    @classmethod
    def encode_entry_reply(cls, nodeid: int, generation: int, fh: FileHandle,
                           entry_valid: int = 0, entry_valid_nsec: int = 0) -> bytes:
        return cls.encode_entry2(nodeid, generation, entry_valid, entry_valid_nsec) + \
            cls.encode_file_handle(fh)

    @classmethod
    def decode_entry_reply(cls, buf: bytes) -> tuple[dict[str, int], FileHandle]:
        if len(buf) < cls.ENTRY2_OUT.size:
            raise HandleError("v3 fuse_entry2_out truncated")
        n, g, ev, evn, fl, _spare = cls.ENTRY2_OUT.unpack_from(buf)
        fh, used = cls.decode_file_handle(buf, cls.ENTRY2_OUT.size)
        if cls.ENTRY2_OUT.size + used != len(buf):
            raise HandleError("v3 entry reply: trailing bytes after the handle")
        return {"nodeid": n, "generation": g, "entry_valid": ev, "entry_valid_nsec": evn,
                "flags": fl}, fh

    # --- compound framing (compound series v5, the base of LOOKUP_HANDLE v3) -------------
    @classmethod
    def encode_compound_request(cls, subrequests: list[bytes], flags: int = 0,
                                result_size: int = 0) -> bytes:
        """COMPOUND payload: fuse_compound_in then complete sub-requests (header + args)."""
        if len(subrequests) > cls.MAX_COMPOUND_OPS:
            raise HandleError(f"{len(subrequests)} ops exceed {cls.MAX_COMPOUND_OPS}")
        return cls.COMPOUND_IN.pack(len(subrequests), flags, result_size, 0) + b"".join(subrequests)

    @classmethod
    def decode_compound_request(cls, payload: bytes) -> tuple[dict[str, int],
                                                              list[tuple[abi.InHeader, bytes]]]:
        if len(payload) < cls.COMPOUND_IN.size:
            raise HandleError("fuse_compound_in truncated")
        count, flags, result_size, _res = cls.COMPOUND_IN.unpack_from(payload)
        if count > cls.MAX_COMPOUND_OPS:
            raise HandleError(f"compound of {count} ops exceeds {cls.MAX_COMPOUND_OPS}")
        pos = cls.COMPOUND_IN.size
        subs: list[tuple[abi.InHeader, bytes]] = []
        while pos < len(payload):
            hdr = abi.InHeader.unpack(payload, pos)
            if hdr.len < abi.InHeader.nbytes() or pos + hdr.len > len(payload):
                raise HandleError(f"compound sub-request length {hdr.len} is out of bounds")
            subs.append((hdr, payload[pos + abi.InHeader.nbytes():pos + hdr.len]))
            pos += hdr.len
        if len(subs) != count:
            raise HandleError(f"compound header says {count} ops, found {len(subs)}")
        return {"count": count, "flags": flags, "result_size": result_size}, subs

    @classmethod
    def encode_compound_reply(cls, replies: list[bytes], flags: int = 0) -> bytes:
        """COMPOUND reply payload: fuse_compound_out then complete sub-replies."""
        return cls.COMPOUND_OUT.pack(len(replies), flags, 0) + b"".join(replies)

    @classmethod
    def decode_compound_reply(cls, payload: bytes) -> tuple[dict[str, int],
                                                            list[tuple[abi.OutHeader, bytes]]]:
        if len(payload) < cls.COMPOUND_OUT.size:
            raise HandleError("fuse_compound_out truncated")
        count, flags, _res = cls.COMPOUND_OUT.unpack_from(payload)
        pos = cls.COMPOUND_OUT.size
        out: list[tuple[abi.OutHeader, bytes]] = []
        while pos < len(payload):
            hdr = abi.OutHeader.unpack(payload, pos)
            if hdr.len < abi.OutHeader.nbytes() or pos + hdr.len > len(payload):
                raise HandleError(f"compound sub-reply length {hdr.len} is out of bounds")
            out.append((hdr, payload[pos + abi.OutHeader.nbytes():pos + hdr.len]))
            pos += hdr.len
        return {"count": count, "flags": flags}, out


def opcode_names(dialect: str | None) -> dict[int, str]:
    """Opcode names to add to abi.OPCODES for a negotiated dialect (for traces)."""
    if dialect == "v2":
        return {V2.OPCODE_LOOKUP_HANDLE: "LOOKUP_HANDLE"}
    if dialect == "v3":
        return {V3.OPCODE_COMPOUND: "COMPOUND", V3.OPCODE_LOOKUP_HANDLE: "LOOKUP_HANDLE",
                V3.OPCODE_MKOBJ_HANDLE: "MKOBJ_HANDLE"}
    return {}
