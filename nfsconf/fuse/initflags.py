"""FUSE INIT flag bits, named by the protocol minor the kernel speaks.

Mainline and the proposals number their flags independently, and they collide: bit 43 is
FUSE_HAS_IO_URING_BUFPOOL from 7.46 on (Linux 7.3), while the LOOKUP_HANDLE RFCs use bit 43
for FUSE_HAS_LOOKUP_HANDLE. So a bit has a name only at a minor that defines it; a bit the
kernel offers that its minor does not define is reported as ``bit<N>``, and a proposal's
name is given to it only where the proposal can be what set it (lookup_handle_offer).

Where each bit came from: the changelog at the top of include/uapi/linux/fuse.h (Linux
7.3, protocol 7.46); bit 44 FUSE_HAS_SYNCFS is in the fuse tree for 7.47.
"""

from __future__ import annotations

from dataclasses import dataclass

# bit -> (name, first minor that defines it); 0 = before 7.23, the oldest this suite speaks
MAINLINE: dict[int, tuple[str, int]] = {
    0: ("ASYNC_READ", 0), 1: ("POSIX_LOCKS", 0), 2: ("FILE_OPS", 0),
    3: ("ATOMIC_O_TRUNC", 0), 4: ("EXPORT_SUPPORT", 0), 5: ("BIG_WRITES", 0),
    6: ("DONT_MASK", 0), 7: ("SPLICE_WRITE", 0), 8: ("SPLICE_MOVE", 0), 9: ("SPLICE_READ", 0),
    10: ("FLOCK_LOCKS", 17), 11: ("HAS_IOCTL_DIR", 18), 12: ("AUTO_INVAL_DATA", 20),
    13: ("DO_READDIRPLUS", 21), 14: ("READDIRPLUS_AUTO", 21), 15: ("ASYNC_DIO", 22),
    16: ("WRITEBACK_CACHE", 23), 17: ("NO_OPEN_SUPPORT", 23), 18: ("PARALLEL_DIROPS", 25),
    19: ("HANDLE_KILLPRIV", 26), 20: ("POSIX_ACL", 26), 21: ("ABORT_ERROR", 27),
    22: ("MAX_PAGES", 28), 23: ("CACHE_SYMLINKS", 28), 24: ("NO_OPENDIR_SUPPORT", 29),
    25: ("EXPLICIT_INVAL_DATA", 30), 26: ("MAP_ALIGNMENT", 31), 27: ("SUBMOUNTS", 32),
    28: ("HANDLE_KILLPRIV_V2", 33), 29: ("SETXATTR_EXT", 33), 30: ("INIT_EXT", 36),
    31: ("INIT_RESERVED", 36), 32: ("SECURITY_CTX", 36), 33: ("HAS_INODE_DAX", 36),
    34: ("CREATE_SUPP_GROUP", 38), 35: ("HAS_EXPIRE_ONLY", 38),
    36: ("DIRECT_IO_ALLOW_MMAP", 39), 37: ("PASSTHROUGH", 40), 38: ("NO_EXPORT_SUPPORT", 40),
    39: ("HAS_RESEND", 40), 40: ("ALLOW_IDMAP", 41), 41: ("OVER_IO_URING", 42),
    42: ("REQUEST_TIMEOUT", 43), 43: ("HAS_IO_URING_BUFPOOL", 46), 44: ("HAS_SYNCFS", 47),
}
# the newest minor this table knows; a kernel past it may define bits the table calls bitN
KNOWN_MINOR = 47

LOOKUP_HANDLE_BIT = 43
# the RFC v2 series was written against 7.45 and leaves the minor there; v3 needs 7.46
V2_MINOR = 45
V3_MINOR = 46


def flag_name(bit: int, minor: int) -> str:
    """The mainline name of BIT at protocol 7.MINOR, or ``bit<N>`` where 7.MINOR defines none."""
    name, since = MAINLINE.get(bit, ("", 1 << 30))
    return name if minor >= since else f"bit{bit}"


def flag_names(flags: int, minor: int, lookup_handle: str | None = None) -> list[str]:
    """Names of every set bit; with LOOKUP_HANDLE known to be offered (lookup_handle_offer),
    its bit is named after the proposal that set it."""
    out = []
    for bit in range(64):
        if flags >> bit & 1:
            if bit == LOOKUP_HANDLE_BIT and lookup_handle:
                out.append(f"HAS_LOOKUP_HANDLE({lookup_handle})")
            else:
                out.append(flag_name(bit, minor))
    return out


def bit(name: str) -> int:
    """The mask of a mainline flag by name (for the flags the server itself asks for)."""
    for b, (n, _since) in MAINLINE.items():
        if n == name:
            return 1 << b
    raise KeyError(name)


@dataclass(frozen=True)
class LookupHandleOffer:
    """Whether the kernel under test offers FUSE_LOOKUP_HANDLE, in which dialect, and why."""

    dialect: str | None  # "v2", "v3" or None
    why: str


DECLINED = "declined by the server's configuration"


def lookup_handle_offer(minor: int, flags: int, wanted: str = "auto") -> LookupHandleOffer:
    """Decide from the INIT request alone, never from bit 43 alone.

    At 7.45 and below mainline defines no bit 43, and the only proposal written against
    7.45 that sets it is RFC v2: the kernel carries that series. From 7.46 on, bit 43 is
    mainline's FUSE_HAS_IO_URING_BUFPOOL; RFC v3 (also 7.46) set the same bit, so the two
    cannot be told apart from INIT: v3 is spoken only when asked for by name.
    """
    if wanted == "off":
        return LookupHandleOffer(None, DECLINED)
    if wanted not in ("auto", "v2", "v3"):
        raise ValueError(f"unknown LOOKUP_HANDLE choice {wanted!r} (auto, off, v2, v3)")
    if not flags >> LOOKUP_HANDLE_BIT & 1:
        return LookupHandleOffer(None, f"7.{minor} kernel does not offer bit 43")
    if minor <= V2_MINOR:
        if wanted == "v3":
            return LookupHandleOffer(None, f"v3 needs protocol 7.{V3_MINOR}; kernel is 7.{minor}")
        return LookupHandleOffer("v2", f"bit 43 at 7.{minor}, which defines no bit 43: the RFC "
                                       "v2 LOOKUP_HANDLE series")
    owner = flag_name(LOOKUP_HANDLE_BIT, minor)
    if wanted == "v3":
        return LookupHandleOffer("v3", f"bit 43 at 7.{minor} is {owner} in mainline; RFC v3 "
                                       "spoken because it was asked for by name")
    return LookupHandleOffer(None, f"bit 43 at 7.{minor} is FUSE_{owner} (mainline), not "
                                   "LOOKUP_HANDLE")
