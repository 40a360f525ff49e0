"""exportfs fids as name_to_handle_at(2) and knfsd carry them.

Every word is a u32 in host order (little-endian here):

- 0x81 FILEID_INO64_GEN (FUSE, XFS): nodeid hi, nodeid lo, generation; 12 bytes.
- 0x82 FILEID_INO64_GEN_PARENT: the same, then parent nodeid hi, lo, generation; 24 bytes.
  name_to_handle_at(AT_HANDLE_CONNECTABLE) on a FUSE file gives type 0x10082
  (FILEID_IS_CONNECTABLE | 0x82), 24 bytes (measured, kernel 6.18).
- 1 FILEID_INO32_GEN (ext4, generic): ino, generation; 8 bytes.
- 2 FILEID_INO32_GEN_PARENT: ino, generation, parent ino, parent generation; 16 bytes
  (the generic encoder writes four words although exportfs.h documents three).

The high 16 bits of a handle type are user flags (FILEID_IS_CONNECTABLE, FILEID_IS_DIR);
decoders strip them into `flags` and `encode()` never writes them (they are not fid bytes).
Any other type decodes to RawFid, named from include/linux/exportfs.h.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nfsconf.handles._base import (
    FID_TYPE_NAMES,
    FILEID_INO32_GEN,
    FILEID_INO32_GEN_PARENT,
    FILEID_INO64_GEN,
    FILEID_INO64_GEN_PARENT,
    FILEID_ROOT,
    FILEID_USER_FLAGS_MASK,
    HOST_ORDER,
    HandleError,
    Printable,
    Reader,
    check_uint,
    fid_type_name,
)

U32 = 0xFFFFFFFF


class FidBase(Printable):
    """What every decoded fid has: a fid type, the stripped user flags, its bytes."""

    flags: int
    _in_title = ("fid_type", "flags")

    @property
    def fid_type(self) -> int:
        raise NotImplementedError

    @property
    def handle_type(self) -> int:
        """The type as name_to_handle_at() reports it: fid type | user flags."""
        return self.fid_type | self.flags

    @property
    def title(self) -> str:
        return fid_type_name(self.handle_type)

    def _check_flags(self) -> None:
        if not 0 <= self.flags <= U32 or self.flags & ~FILEID_USER_FLAGS_MASK:
            raise ValueError(f"flags=0x{self.flags:x} is not in the user flag bits 0xffff0000")

    def _head(self) -> dict[str, Any]:
        return {"fid_type": self.fid_type, "flags": self.flags}


def _words(*values: int) -> bytes:
    return b"".join((v & U32).to_bytes(4, HOST_ORDER) for v in values)


@dataclass(frozen=True)
class Ino64GenFid(FidBase):
    """0x81, or 0x82 when the parent pair is present."""

    nodeid: int
    generation: int
    parent_nodeid: int | None = None
    parent_generation: int | None = None
    flags: int = 0

    def __post_init__(self) -> None:
        check_uint("nodeid", self.nodeid, 64)
        check_uint("generation", self.generation, 32)
        if (self.parent_nodeid is None) != (self.parent_generation is None):
            raise ValueError("parent_nodeid and parent_generation go together")
        if self.parent_nodeid is not None:
            check_uint("parent_nodeid", self.parent_nodeid, 64)
            check_uint("parent_generation", self.parent_generation, 32)
        self._check_flags()

    @property
    def fid_type(self) -> int:
        return FILEID_INO64_GEN if self.parent_nodeid is None else FILEID_INO64_GEN_PARENT

    def encode(self) -> bytes:
        out = _words(self.nodeid >> 32, self.nodeid, self.generation)
        if self.parent_nodeid is not None:
            out += _words(self.parent_nodeid >> 32, self.parent_nodeid, self.parent_generation)
        return out

    @classmethod
    def decode(cls, fid_type: int, data: bytes, flags: int = 0, base: int = 0) -> Ino64GenFid:
        r = Reader(data, base)
        nodeid = r.uint(4, "nodeid hi") << 32 | r.uint(4, "nodeid lo")
        gen = r.uint(4, "generation")
        pnodeid = pgen = None
        if fid_type == FILEID_INO64_GEN_PARENT:
            pnodeid = r.uint(4, "parent nodeid hi") << 32 | r.uint(4, "parent nodeid lo")
            pgen = r.uint(4, "parent generation")
        r.done(FID_TYPE_NAMES[fid_type])
        return cls(nodeid, gen, pnodeid, pgen, flags)

    def fields(self) -> dict[str, Any]:
        out = self._head() | {"nodeid": self.nodeid, "generation": self.generation}
        if self.parent_nodeid is not None:
            out["parent_nodeid"] = self.parent_nodeid
            out["parent_generation"] = self.parent_generation
        return out


@dataclass(frozen=True)
class Ino32GenFid(FidBase):
    """1, or 2 when the parent pair is present (ext4 and the generic encoder)."""

    ino: int
    generation: int
    parent_ino: int | None = None
    parent_generation: int | None = None
    flags: int = 0

    def __post_init__(self) -> None:
        check_uint("ino", self.ino, 32)
        check_uint("generation", self.generation, 32)
        if (self.parent_ino is None) != (self.parent_generation is None):
            raise ValueError("parent_ino and parent_generation go together")
        if self.parent_ino is not None:
            check_uint("parent_ino", self.parent_ino, 32)
            check_uint("parent_generation", self.parent_generation, 32)
        self._check_flags()

    @property
    def fid_type(self) -> int:
        return FILEID_INO32_GEN if self.parent_ino is None else FILEID_INO32_GEN_PARENT

    def encode(self) -> bytes:
        parent = () if self.parent_ino is None else (self.parent_ino, self.parent_generation)
        return _words(self.ino, self.generation, *parent)

    @classmethod
    def decode(cls, fid_type: int, data: bytes, flags: int = 0, base: int = 0) -> Ino32GenFid:
        r = Reader(data, base)
        ino, gen = r.uint(4, "ino"), r.uint(4, "generation")
        pino = pgen = None
        if fid_type == FILEID_INO32_GEN_PARENT:
            pino, pgen = r.uint(4, "parent ino"), r.uint(4, "parent generation")
        r.done(FID_TYPE_NAMES[fid_type])
        return cls(ino, gen, pino, pgen, flags)

    def fields(self) -> dict[str, Any]:
        out = self._head() | {"ino": self.ino, "generation": self.generation}
        if self.parent_ino is not None:
            out |= {"parent_ino": self.parent_ino, "parent_generation": self.parent_generation}
        return out


@dataclass(frozen=True)
class RawFid(FidBase):
    """A fid type this package does not lay out: kept as bytes, shown by name."""

    type: int
    data: bytes = b""
    flags: int = 0

    def __post_init__(self) -> None:
        check_uint("type", self.type, 16)
        self._check_flags()

    @property
    def fid_type(self) -> int:
        return self.type

    def encode(self) -> bytes:
        return self.data

    @classmethod
    def decode(cls, fid_type: int, data: bytes, flags: int = 0, base: int = 0) -> RawFid:
        if fid_type == FILEID_ROOT and data:
            raise HandleError(base, f"FILEID_ROOT carries no fid bytes, got {len(data)}")
        return cls(fid_type, bytes(data), flags)

    def fields(self) -> dict[str, Any]:
        return self._head() | {"data": self.data}
