"""Point an ELF executable at another program interpreter (PT_INTERP), in place.

A User-Mode Linux package of a newer Debian suite is linked against that suite's glibc.
Started through that suite's loader as a command (`ld.so linux`), UML's break sits after
the loader instead of after UML, and UML's memory setup fails; with the loader named in
the binary itself the kernel maps UML as usual. The new path is appended to the file and
the PT_INTERP entry points its file offset there: the kernel reads the interpreter's name
from the file alone.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO

_PT_INTERP = 3
_ELFCLASS64 = 2
_ELFDATA2LSB = 1


class ElfError(ValueError):
    pass


def interp_of(path: Path) -> str:
    """The program interpreter PATH names, as the kernel reads it."""
    with open(path, "rb") as f:
        for _, offset, size in _interp_entries(f):
            f.seek(offset)
            return f.read(size).rstrip(b"\0").decode()
    raise ElfError(f"{path} names no program interpreter (static?)")


def set_interp(path: Path, loader: str) -> None:
    with open(path, "r+b") as f:
        entries = _interp_entries(f)
        if not entries:
            raise ElfError(f"{path} names no program interpreter (static?)")
        end = f.seek(0, 2)
        _, offset, size = entries[0]
        if offset + size == end:  # a name this function appended: replaced, not stacked
            f.truncate(offset)
            end = f.seek(offset)
        name = loader.encode() + b"\0"
        f.write(name)
        for entry, _, _ in entries:
            f.seek(entry + 8)  # p_offset
            f.write(struct.pack("<Q", end))
            f.seek(entry + 32)  # p_filesz
            f.write(struct.pack("<Q", len(name)))


def _interp_entries(f: BinaryIO) -> list[tuple[int, int, int]]:
    """(header offset, p_offset, p_filesz) of each PT_INTERP of a 64-bit little-endian ELF."""
    head = f.read(64)
    if head[:4] != b"\x7fELF" or head[4] != _ELFCLASS64 or head[5] != _ELFDATA2LSB:
        raise ElfError("not a 64-bit little-endian ELF file")
    (phoff,) = struct.unpack_from("<Q", head, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", head, 0x36)
    out = []
    for i in range(phnum):
        f.seek(phoff + i * phentsize)
        ph = f.read(phentsize)
        (ptype,) = struct.unpack_from("<I", ph, 0)
        if ptype == _PT_INTERP:
            offset, = struct.unpack_from("<Q", ph, 8)
            size, = struct.unpack_from("<Q", ph, 32)
            out.append((phoff + i * phentsize, offset, size))
    return out
