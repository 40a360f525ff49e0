"""The knfsd NFS file handle (fs/nfsd/nfsfh.h, struct knfsd_fh, version 1).

    u8 fh_version (1) | u8 fh_auth_type (0) | u8 fh_fsid_type | u8 fh_fileid_type
    | fsid (key_len(fsid_type) bytes) | fid (the exportfs fid; none for FILEID_ROOT)

Measured through knfsd exporting FUSE with fsid=101: `01 00 01 81 | 65000000 | nodeid hi |
nodeid lo | generation`; the export root has fileid type 0; subtree_check gives 0x82.
The fsid words are u32s in host order except the dev numbers FSID_DEV and FSID_MAJOR_MINOR
store with htonl() (mk_fsid()). knfsd never puts the user flag bits in the handle.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from nfsconf.handles._base import (
    FILEID_INVALID,
    FILEID_ROOT,
    HOST_ORDER,
    HandleError,
    Printable,
    Reader,
    check_uint,
    fid_type_name,
)
from nfsconf.handles.exportfs import FidBase

NFS3_FHSIZE = 64
NFS4_FHSIZE = 128
FH_VERSION = 1

# enum nfsd_fsid -> (name, key_len()).
FSID_TYPES: dict[int, tuple[str, int]] = {
    0: ("FSID_DEV", 8),
    1: ("FSID_NUM", 4),
    2: ("FSID_MAJOR_MINOR", 12),
    3: ("FSID_ENCODE_DEV", 8),
    4: ("FSID_UUID4_INUM", 8),
    5: ("FSID_UUID8", 8),
    6: ("FSID_UUID16", 16),
    7: ("FSID_UUID16_INUM", 24),
}
FSID_DEV, FSID_NUM, FSID_MAJOR_MINOR, FSID_ENCODE_DEV = 0, 1, 2, 3
FSID_UUID4_INUM, FSID_UUID8, FSID_UUID16, FSID_UUID16_INUM = 4, 5, 6, 7


def fsid_fields(fsid_type: int, fsid: bytes) -> dict[str, Any]:
    """What mk_fsid() packed into the fsid bytes, by name."""

    def host(a: int, b: int) -> int:
        return int.from_bytes(fsid[a:b], HOST_ORDER)

    def net(a: int, b: int) -> int:
        return int.from_bytes(fsid[a:b], "big")

    if fsid_type == FSID_DEV:
        return {"major": net(0, 4) >> 16, "minor": net(0, 4) & 0xFFFF, "ino": host(4, 8)}
    if fsid_type == FSID_NUM:
        return {"fsid_num": host(0, 4)}
    if fsid_type == FSID_MAJOR_MINOR:
        return {"major": net(0, 4), "minor": net(4, 8), "ino": host(8, 12)}
    if fsid_type == FSID_ENCODE_DEV:  # new_encode_dev(): minor lo 8 | major << 8 | minor hi << 12
        dev = host(0, 4)
        minor = dev & 0xFF | dev >> 12 & 0xFFF00
        return {"major": dev >> 8 & 0xFFF, "minor": minor, "ino": host(4, 8)}
    if fsid_type == FSID_UUID4_INUM:
        return {"ino": host(0, 4), "uuid_folded": fsid[4:8]}
    if fsid_type == FSID_UUID8:
        return {"uuid_folded": fsid}
    if fsid_type == FSID_UUID16:
        return {"uuid": str(uuid.UUID(bytes=fsid))}
    return {"ino": host(0, 8), "uuid": str(uuid.UUID(bytes=fsid[8:24]))}


@dataclass(frozen=True)
class KnfsdFh(Printable):
    """A version-1 knfsd file handle; `fid` is None for the export root (FILEID_ROOT)."""

    fsid_type: int
    fsid: bytes
    fid: FidBase | None = None
    _in_title = ("fsid_type",)

    def __post_init__(self) -> None:
        if self.fsid_type not in FSID_TYPES or len(self.fsid) != FSID_TYPES[self.fsid_type][1]:
            raise ValueError(f"fsid type {self.fsid_type} with {len(self.fsid)} fsid bytes")
        if self.fid is not None:
            check_uint("fid type", self.fid.fid_type, 8)
            if self.fid.flags or self.fid.fid_type in (FILEID_ROOT, FILEID_INVALID):
                raise ValueError(f"{self.fid.title} cannot sit in a knfsd handle")

    @property
    def fileid_type(self) -> int:
        return FILEID_ROOT if self.fid is None else self.fid.fid_type

    @property
    def title(self) -> str:
        return f"knfsd_fh v{FH_VERSION} {FSID_TYPES[self.fsid_type][0]}"

    def encode(self) -> bytes:
        head = bytes((FH_VERSION, 0, self.fsid_type, self.fileid_type)) + self.fsid
        return head + (self.fid.encode() if self.fid else b"")

    @property
    def fits_nfs3(self) -> bool:
        return len(self.encode()) <= NFS3_FHSIZE

    @classmethod
    def decode(cls, data: bytes, max_size: int = NFS4_FHSIZE) -> KnfsdFh:
        # Lazy: the dispatch lives in the package __init__, which imports this module.
        from nfsconf.handles import decode_fid

        if len(data) > max_size:
            raise HandleError(max_size, f"handle of {len(data)} bytes exceeds {max_size}")
        r = Reader(data)
        if (version := r.uint(1, "fh_version")) != FH_VERSION:
            raise HandleError(0, f"fh_version {version} unsupported, need {FH_VERSION}")
        if auth := r.uint(1, "fh_auth_type"):
            raise HandleError(1, f"fh_auth_type {auth}, must be 0")
        if (fsid_type := r.uint(1, "fh_fsid_type")) not in FSID_TYPES:
            raise HandleError(2, f"unknown fh_fsid_type {fsid_type}")
        fileid_type = r.uint(1, "fh_fileid_type")
        if fileid_type == FILEID_INVALID:
            raise HandleError(3, "fh_fileid_type 0xff is FILEID_INVALID")
        name, key_len = FSID_TYPES[fsid_type]
        fsid = r.take(key_len, f"fsid ({name})")
        if fileid_type == FILEID_ROOT:
            r.done("fsid of an export root (FILEID_ROOT)")
            return cls(fsid_type, fsid)
        at = r.offset
        fid = decode_fid(fileid_type, r.take(r.left, "fid"), base=at)
        return cls(fsid_type, fsid, fid)

    def fields(self) -> dict[str, Any]:
        return {
            "fsid_type": self.fsid_type,
            "fsid": self.fsid,
            **fsid_fields(self.fsid_type, self.fsid),
            "fileid_type": self.fileid_type,
            "fileid_type_name": fid_type_name(self.fileid_type),
            "fid": self.fid,
        }
