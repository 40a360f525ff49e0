"""Shared pieces of the handle codecs: the one error type, a bounds-checked reader, the
pretty-print mixin and the kernel's fid type names (include/linux/exportfs.h)."""

from __future__ import annotations

from typing import Any, Literal

# The kernel writes fid words in host order; every handle here was measured on x86.
HOST_ORDER: Literal["little"] = "little"
MAX_HANDLE_SZ = 128  # include/linux/exportfs.h; also the limit name_to_handle_at() enforces

FILEID_ROOT = 0
FILEID_INO32_GEN = 1
FILEID_INO32_GEN_PARENT = 2
FILEID_INO64_GEN = 0x81
FILEID_INO64_GEN_PARENT = 0x82
FILEID_FUSE_WITHOUT_PARENT = 0x91  # RFC v2 LOOKUP_HANDLE patch 6/6, not merged
FILEID_FUSE_WITH_PARENT = 0x92
FILEID_INVALID = 0xFF

FID_TYPE_NAMES: dict[int, str] = {
    FILEID_ROOT: "FILEID_ROOT",
    FILEID_INO32_GEN: "FILEID_INO32_GEN",
    FILEID_INO32_GEN_PARENT: "FILEID_INO32_GEN_PARENT",
    0x4D: "FILEID_BTRFS_WITHOUT_PARENT",
    0x4E: "FILEID_BTRFS_WITH_PARENT",
    0x4F: "FILEID_BTRFS_WITH_PARENT_ROOT",
    0x51: "FILEID_UDF_WITHOUT_PARENT",
    0x52: "FILEID_UDF_WITH_PARENT",
    0x61: "FILEID_NILFS_WITHOUT_PARENT",
    0x62: "FILEID_NILFS_WITH_PARENT",
    0x71: "FILEID_FAT_WITHOUT_PARENT",
    0x72: "FILEID_FAT_WITH_PARENT",
    FILEID_INO64_GEN: "FILEID_INO64_GEN",
    FILEID_INO64_GEN_PARENT: "FILEID_INO64_GEN_PARENT",
    FILEID_FUSE_WITHOUT_PARENT: "FILEID_FUSE_WITHOUT_PARENT",
    FILEID_FUSE_WITH_PARENT: "FILEID_FUSE_WITH_PARENT",
    0x97: "FILEID_LUSTRE",
    0xB1: "FILEID_BCACHEFS_WITHOUT_PARENT",
    0xB2: "FILEID_BCACHEFS_WITH_PARENT",
    0xF1: "FILEID_NSFS",
    0xFE: "FILEID_KERNFS",
    FILEID_INVALID: "FILEID_INVALID",
    0x100: "FILEID_PIDFS",
}

# Flags name_to_handle_at() ORs into handle_type (the fs never sees the high 16 bits).
FILEID_USER_FLAGS_MASK = 0xFFFF0000
FILEID_IS_CONNECTABLE = 0x10000
FILEID_IS_DIR = 0x20000
FILEID_IS_AUTONOMOUS = 0x40000  # proposed in the pidfs series; not in 6.18
FLAG_NAMES = {
    FILEID_IS_CONNECTABLE: "FILEID_IS_CONNECTABLE",
    FILEID_IS_DIR: "FILEID_IS_DIR",
    FILEID_IS_AUTONOMOUS: "FILEID_IS_AUTONOMOUS",
}


def split_type(handle_type: int) -> tuple[int, int]:
    """handle_type -> (fid type, user flags)."""
    return handle_type & ~FILEID_USER_FLAGS_MASK, handle_type & FILEID_USER_FLAGS_MASK


def fid_type_name(handle_type: int) -> str:
    """'FILEID_INO64_GEN_PARENT|FILEID_IS_CONNECTABLE'; unknown parts show as hex."""
    fid_type, flags = split_type(handle_type)
    parts = [FID_TYPE_NAMES.get(fid_type, f"FILEID_0x{fid_type:x}")]
    parts += [FLAG_NAMES.get(1 << b, f"0x{1 << b:x}") for b in range(16, 32) if flags >> b & 1]
    return "|".join(parts)


def check_uint(name: str, value: int, bits: int) -> None:
    """Constructor guard: a field that will not fit its C type is a caller bug."""
    if not isinstance(value, int) or not 0 <= value < 1 << bits:
        raise ValueError(f"{name}={value!r} does not fit u{bits}")


class HandleError(ValueError):
    """Malformed handle bytes: where (byte offset in the outermost handle) and why."""

    def __init__(self, offset: int, reason: str) -> None:
        super().__init__(f"offset {offset}: {reason}")
        self.offset = offset
        self.reason = reason


class Reader:
    """Cursor over handle bytes; every shortfall becomes a HandleError at the right offset."""

    def __init__(self, data: bytes, base: int = 0) -> None:
        self.data, self.pos, self.base = bytes(data), 0, base

    @property
    def offset(self) -> int:
        return self.base + self.pos

    @property
    def left(self) -> int:
        return len(self.data) - self.pos

    def take(self, n: int, what: str) -> bytes:
        if n > self.left:
            raise HandleError(self.offset, f"{what} truncated, need {n} bytes, have {self.left}")
        self.pos += n
        return self.data[self.pos - n : self.pos]

    def uint(self, n: int, what: str) -> int:
        return int.from_bytes(self.take(n, what), HOST_ORDER)

    def done(self, what: str) -> None:
        if self.left:
            raise HandleError(self.offset, f"{self.left} extra bytes after {what}")


def _text(key: str, value: Any) -> str:
    if isinstance(value, bytes):
        return value.hex() or "-"
    if isinstance(value, bool) or not isinstance(value, int):
        return str(value)
    # Types, flags and nodeids read best in hex (that is how the kernel prints them).
    return f"0x{value:x}" if key.endswith(("type", "flags", "nodeid")) else str(value)


def _json(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, Printable):
        return value.to_dict()
    return value


class Printable:
    """Mixin: a subclass lists its named fields once; describe/to_dict/__str__ follow."""

    # Keys already spelled out by the title, left out of the one-line form.
    _in_title: tuple[str, ...] = ()

    @property
    def title(self) -> str:
        raise NotImplementedError

    def fields(self) -> dict[str, Any]:
        raise NotImplementedError

    def encode(self) -> bytes:
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: bytes as hex, nested handles as dicts, the raw encoding as 'hex'."""
        out = {"kind": self.title, "hex": self.encode().hex()}
        out.update({k: _json(v) for k, v in self.fields().items()})
        return out

    def describe(self, indent: str = "") -> str:
        lines = [f"{indent}{self.title} ({len(self.encode())} bytes)"]
        for key, value in self.fields().items():
            if isinstance(value, Printable):
                lines += [f"{indent}  {key}:", value.describe(indent + "    ")]
            else:
                lines.append(f"{indent}  {key}: {_text(key, value)}")
        return "\n".join(lines)

    def __str__(self) -> str:
        parts = [self.title]
        for key, value in self.fields().items():
            if key in self._in_title or value is None or value == b"":
                continue
            shown = f"({value})" if isinstance(value, Printable) else _text(key, value)
            parts.append(f"{key}={shown}")
        return " ".join(parts)
