"""Hypothesis: every codec round-trips both ways, and arbitrary bytes never escape HandleError."""

from __future__ import annotations

import dataclasses
import json

from hypothesis import assume, given
from hypothesis import strategies as st

from nfsconf.handles import (
    FID_TYPE_NAMES,
    FSID_TYPES,
    MAX_HANDLE_SZ,
    NFS4_FHSIZE,
    FidBase,
    FuseFid,
    FuseInodeHandle,
    HandleError,
    Ino32GenFid,
    Ino64GenFid,
    KnfsdFh,
    RawFid,
    decode_fid,
    decode_nfs_fh,
)

u32 = st.integers(0, 2**32 - 1)
u64 = st.integers(0, 2**64 - 1)
user_flags = st.sampled_from([0, 0x10000, 0x20000, 0x30000, 0x40000, 0x80000000])


@st.composite
def ino64(draw: st.DrawFn) -> Ino64GenFid:
    parent = draw(st.booleans())
    pn, pg = (draw(u64), draw(u32)) if parent else (None, None)
    return Ino64GenFid(draw(u64), draw(u32), pn, pg, draw(user_flags))


@st.composite
def ino32(draw: st.DrawFn) -> Ino32GenFid:
    parent = draw(st.booleans())
    pi, pg = (draw(u32), draw(u32)) if parent else (None, None)
    return Ino32GenFid(draw(u32), draw(u32), pi, pg, draw(user_flags))


@st.composite
def fuse(draw: st.DrawFn, room: int = MAX_HANDLE_SZ) -> FuseFid:
    """A 0x91/0x92 fid whose bytes, fill included, fit in `room`."""

    def entry(max_size: int) -> FuseInodeHandle:
        handle = draw(st.binary(max_size=max_size))
        pad = draw(st.one_of(st.just(bytes(4)), st.binary(min_size=4, max_size=4)))
        return FuseInodeHandle(draw(u64), draw(u32), draw(u32), handle, pad)

    inode = entry(room - 24 - 3)
    parent = None
    if draw(st.booleans()) and room - 3 - inode.length >= 24:
        parent = entry(room - 3 - inode.length - 24)
    length = inode.length + (parent.length if parent else 0)
    fill = draw(st.one_of(st.just(b""), st.binary(min_size=-length % 4, max_size=-length % 4)))
    return FuseFid(inode, parent, fill, draw(user_flags))


raw = st.builds(
    RawFid,
    st.integers(0, 0xFFFF).filter(lambda t: t not in (0, 0xFF, 1, 2, 0x81, 0x82, 0x91, 0x92)),
    st.binary(max_size=MAX_HANDLE_SZ),
    user_flags,
)
any_fid = st.one_of(ino64(), ino32(), fuse(), raw)


@given(any_fid)
def test_fid_encode_decode_is_identity(fid: FidBase) -> None:
    data = fid.encode()
    back = decode_fid(fid.handle_type, data)
    assert back == fid and back.encode() == data
    assert json.loads(json.dumps(back.to_dict()))["hex"] == data.hex()
    assert str(back).startswith(FID_TYPE_NAMES.get(fid.fid_type, "FILEID_0x"))
    assert back.describe().count("\n") >= 2


@st.composite
def knfsd(draw: st.DrawFn) -> KnfsdFh:
    fsid_type = draw(st.sampled_from(sorted(FSID_TYPES)))
    key_len = FSID_TYPES[fsid_type][1]
    fsid = draw(st.binary(min_size=key_len, max_size=key_len))
    room = NFS4_FHSIZE - 4 - key_len
    small_raw = raw.filter(lambda f: len(f.data) <= room and f.fid_type <= 0xFF)
    fid = draw(st.one_of(st.none(), ino64(), ino32(), fuse(room), small_raw))
    if fid is not None:  # knfsd carries the bare fid type, never the user flags
        fid = dataclasses.replace(fid, flags=0)
    return KnfsdFh(fsid_type, fsid, fid)


@given(knfsd())
def test_knfsd_encode_decode_is_identity(fh: KnfsdFh) -> None:
    data = fh.encode()
    back = decode_nfs_fh(data)
    assert back == fh and back.encode() == data
    assert json.loads(json.dumps(back.to_dict()))["fileid_type"] == data[3]


fid_types = st.one_of(
    st.sampled_from([0, 1, 2, 0x81, 0x82, 0x91, 0x92, 0xFF, 0x10082, 0x30001, 0x10091]),
    st.integers(-(2**33), 2**33),
)


@given(fid_types, st.binary(max_size=160))
def test_arbitrary_fid_bytes_decode_losslessly_or_raise_handle_error(t: int, data: bytes) -> None:
    try:
        fid = decode_fid(t, data)
    except HandleError as err:
        assert 0 <= err.offset <= len(data) + MAX_HANDLE_SZ and err.reason
        return
    assert fid.encode() == data and fid.handle_type == t  # whatever decodes re-encodes exactly


@st.composite
def fh_like(draw: st.DrawFn) -> bytes:
    """Mostly plausible headers, so the fsid and fid decoders get exercised too."""
    head = bytes(
        [
            draw(st.sampled_from([1, 1, 1, 0, 2])),
            draw(st.sampled_from([0, 0, 0, 1])),
            draw(st.integers(0, 9)),
            draw(st.sampled_from([0, 1, 2, 0x81, 0x82, 0x91, 0x92, 0xFF, 0x4D])),
        ]
    )
    return draw(st.sampled_from([b"", head])) + draw(st.binary(max_size=140))


@given(fh_like())
def test_arbitrary_nfs_fh_bytes_decode_losslessly_or_raise_handle_error(data: bytes) -> None:
    try:
        fh = decode_nfs_fh(data)
    except HandleError as err:
        assert 0 <= err.offset <= NFS4_FHSIZE and err.reason
        return
    assert fh.encode() == data


@given(st.one_of(any_fid, knfsd()), st.data())
def test_every_truncation_of_a_valid_handle_is_refused(
    obj: FidBase | KnfsdFh, data: st.DataObject
) -> None:
    full = obj.encode()
    assume(full)
    cut = data.draw(st.integers(0, len(full) - 1))
    try:
        if isinstance(obj, KnfsdFh):
            decode_nfs_fh(full[:cut])
        else:
            decode_fid(obj.handle_type, full[:cut])
    except HandleError:
        return
    # Only raw bytes may end anywhere; a fuse fid may lose exactly its word fill.
    inner = obj.fid if isinstance(obj, KnfsdFh) else obj
    fill = inner.fill if isinstance(inner, FuseFid) else b""
    assert isinstance(inner, RawFid) or (fill and cut == len(full) - len(fill))


@given(st.binary(min_size=1, max_size=104), u32, st.booleans())
def test_a_handle_alone_fid_survives_its_bytes(handle: bytes, fh_type: int, parent: bool) -> None:
    """Fix 0013's form: nodeid and generation 0 beside a handle reads back as naming the
    object by its handle alone; a nodeid or a generation, or no handle, does not."""
    part = FuseInodeHandle(0, 0, fh_type, handle)
    fid = FuseFid(part, part if parent else None, bytes(-(2 * part.length if parent else
                                                           part.length) % 4), 0)
    back = decode_fid(fid.handle_type, fid.encode())
    assert back.inode.by_handle_alone and (back.parent is None or back.parent.by_handle_alone)
    assert not FuseInodeHandle(1, 0, fh_type, handle).by_handle_alone
    assert not FuseInodeHandle(0, 1, fh_type, handle).by_handle_alone
    assert not FuseInodeHandle(0, 0, fh_type, b"").by_handle_alone
