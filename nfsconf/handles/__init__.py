"""File handle codecs: exportfs fids, RFC v2 LOOKUP_HANDLE fids, knfsd NFS handles.

    fid = decode_fid(handle.fh_type, handle.data)   # name_to_handle_at() type + bytes
    fh = decode_nfs_fh(nfs_handle_bytes)             # a knfsd handle off the wire
    print(fid); print(fh.describe()); json.dumps(fh.to_dict()); fid.encode() == data

Every malformed input raises HandleError (a ValueError) naming the offset and the reason.
"""

from __future__ import annotations

from nfsconf.handles._base import (
    FID_TYPE_NAMES,
    FILEID_FUSE_WITH_PARENT,
    FILEID_FUSE_WITHOUT_PARENT,
    FILEID_INO32_GEN,
    FILEID_INO32_GEN_PARENT,
    FILEID_INO64_GEN,
    FILEID_INO64_GEN_PARENT,
    FILEID_INVALID,
    FILEID_IS_AUTONOMOUS,
    FILEID_IS_CONNECTABLE,
    FILEID_IS_DIR,
    FILEID_ROOT,
    MAX_HANDLE_SZ,
    HandleError,
    fid_type_name,
    split_type,
)
from nfsconf.handles.exportfs import FidBase, Ino32GenFid, Ino64GenFid, RawFid
from nfsconf.handles.fusefh import FuseFid, FuseInodeHandle, V2Encoding, v2_encode_fh
from nfsconf.handles.knfsd import FSID_TYPES, NFS3_FHSIZE, NFS4_FHSIZE, KnfsdFh

Fid = Ino64GenFid | Ino32GenFid | FuseFid | RawFid

_CODECS: dict[int, type[Ino64GenFid] | type[Ino32GenFid] | type[FuseFid]] = {
    FILEID_INO32_GEN: Ino32GenFid,
    FILEID_INO32_GEN_PARENT: Ino32GenFid,
    FILEID_INO64_GEN: Ino64GenFid,
    FILEID_INO64_GEN_PARENT: Ino64GenFid,
    FILEID_FUSE_WITHOUT_PARENT: FuseFid,
    FILEID_FUSE_WITH_PARENT: FuseFid,
}


def decode_fid(fid_type: int, data: bytes, *, base: int = 0) -> Fid:
    """Decode fid bytes by handle type; user flag bits are stripped into `.flags`.

    `base` is where `data` starts inside an enclosing handle, so errors point into it.
    """
    if not isinstance(fid_type, int) or not 0 <= fid_type <= 0xFFFFFFFF:
        raise HandleError(base, f"handle type {fid_type!r} is not a u32")
    kind, flags = split_type(fid_type)
    if kind == FILEID_INVALID:
        raise HandleError(base, "fid type 0xff is FILEID_INVALID (encoding failed)")
    if len(data) > MAX_HANDLE_SZ:
        raise HandleError(base + MAX_HANDLE_SZ, f"fid of {len(data)} bytes exceeds {MAX_HANDLE_SZ}")
    return _CODECS.get(kind, RawFid).decode(kind, bytes(data), flags, base)


def decode_nfs_fh(data: bytes, max_size: int = NFS4_FHSIZE) -> KnfsdFh:
    """Decode a knfsd handle; pass max_size=NFS3_FHSIZE for an NFSv3 handle."""
    return KnfsdFh.decode(bytes(data), max_size)


__all__ = [
    "FID_TYPE_NAMES", "FILEID_FUSE_WITHOUT_PARENT", "FILEID_FUSE_WITH_PARENT", "FILEID_INO32_GEN",
    "FILEID_INO32_GEN_PARENT", "FILEID_INO64_GEN", "FILEID_INO64_GEN_PARENT", "FILEID_INVALID",
    "FILEID_IS_AUTONOMOUS", "FILEID_IS_CONNECTABLE", "FILEID_IS_DIR", "FILEID_ROOT",
    "FSID_TYPES", "MAX_HANDLE_SZ", "NFS3_FHSIZE", "NFS4_FHSIZE", "Fid", "FidBase", "FuseFid",
    "FuseInodeHandle", "HandleError", "Ino32GenFid", "Ino64GenFid", "KnfsdFh", "RawFid",
    "V2Encoding", "decode_fid", "decode_nfs_fh", "fid_type_name", "split_type", "v2_encode_fh",
]
