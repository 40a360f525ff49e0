"""Handle codecs against bytes checked by hand, measured through knfsd, and from the kernel."""

from __future__ import annotations

import ctypes
import fcntl
import json
import os
import struct
import subprocess

import pytest

from nfsconf.handles import (
    FILEID_IS_CONNECTABLE,
    FILEID_IS_DIR,
    NFS3_FHSIZE,
    FuseFid,
    FuseInodeHandle,
    HandleError,
    Ino32GenFid,
    Ino64GenFid,
    KnfsdFh,
    RawFid,
    decode_fid,
    decode_nfs_fh,
    fusefh,
    v2_encode_fh,
)

# --- exportfs fids -------------------------------------------------------------------------

# nodeid 0x0000000100000002, generation 3: hi word 1, lo word 2, gen 3, each u32 little-endian.
INO64 = bytes.fromhex("010000000200000003000000")
PARENT = bytes.fromhex("000000000100000000000000")  # nodeid 1 (FUSE_ROOT_ID), gen 0


def test_0x81_layout_hand_checked() -> None:
    fid = decode_fid(0x81, INO64)
    assert fid == Ino64GenFid(0x0000000100000002, 3)
    assert fid.encode() == INO64
    assert (fid.fid_type, fid.flags) == (0x81, 0)
    assert str(fid) == "FILEID_INO64_GEN nodeid=0x100000002 generation=3"


def test_0x10082_connectable_as_name_to_handle_at_reports_it() -> None:
    fid = decode_fid(0x10082, INO64 + PARENT)
    assert isinstance(fid, Ino64GenFid)
    assert (fid.fid_type, fid.flags, fid.handle_type) == (0x82, FILEID_IS_CONNECTABLE, 0x10082)
    assert (fid.parent_nodeid, fid.parent_generation) == (1, 0)
    assert fid.encode() == INO64 + PARENT  # flags are not fid bytes
    assert fid.title == "FILEID_INO64_GEN_PARENT|FILEID_IS_CONNECTABLE"
    assert fid.to_dict()["parent_nodeid"] == 1


def test_unknown_types_keep_bytes_and_print_by_name() -> None:
    fid = decode_fid(0x4D | FILEID_IS_DIR, b"\x01\x02")
    assert fid == RawFid(0x4D, b"\x01\x02", FILEID_IS_DIR)
    assert str(fid) == "FILEID_BTRFS_WITHOUT_PARENT|FILEID_IS_DIR data=0102"
    assert decode_fid(0x1234, b"").title == "FILEID_0x1234"
    assert decode_fid(0x80000 | 0x97, b"").title == "FILEID_LUSTRE|0x80000"


# --- knfsd handles as measured (Debian 6.1 VM, export fsid=101) -----------------------------

FSID101 = (101).to_bytes(4, "little")


def test_knfsd_measured_file_handle() -> None:
    data = bytes.fromhex("01000181") + FSID101 + INO64
    fh = decode_nfs_fh(data, max_size=NFS3_FHSIZE)
    assert fh == KnfsdFh(1, FSID101, Ino64GenFid(0x100000002, 3))
    assert fh.encode() == data and fh.fits_nfs3
    d = fh.to_dict()
    assert (d["fsid_num"], d["fileid_type_name"], d["fid"]["nodeid"]) == (
        101,
        "FILEID_INO64_GEN",
        1 << 32 | 2,
    )
    assert json.loads(json.dumps(d)) == d


def test_knfsd_export_root_has_no_fid() -> None:
    data = bytes.fromhex("01000100") + FSID101
    fh = decode_nfs_fh(data)
    assert fh.fid is None and fh.fileid_type == 0 and fh.encode() == data
    assert "FILEID_ROOT" in str(fh)
    with pytest.raises(HandleError, match=r"offset 8: 4 extra bytes after fsid of an export root"):
        decode_nfs_fh(data + b"\0" * 4)


def test_knfsd_subtree_check_0x82() -> None:
    data = bytes.fromhex("01000182") + FSID101 + INO64 + PARENT
    fid = decode_nfs_fh(data).fid
    assert isinstance(fid, Ino64GenFid) and fid.fid_type == 0x82 and fid.parent_nodeid == 1


@pytest.mark.parametrize(
    ("fsid_type", "fsid", "expect"),
    [
        # FSID_DEV: htonl(major << 16 | minor), then the root inode in host order.
        (0, bytes.fromhex("00080001") + (2).to_bytes(4, "little"), {"major": 8, "minor": 1}),
        (2, bytes.fromhex("0000010300000005") + (9).to_bytes(4, "little"), {"major": 259}),
        # new_encode_dev(MKDEV(259, 0x12345)) = 0x45 | 259 << 8 | 0x12300 << 12
        (
            3,
            (0x45 | 259 << 8 | 0x12300 << 12).to_bytes(4, "little") + bytes(4),
            {"major": 259, "minor": 0x12345},
        ),
        (6, bytes(range(16)), {"uuid": "00010203-0405-0607-0809-0a0b0c0d0e0f"}),
        (7, (5).to_bytes(8, "little") + bytes(16), {"ino": 5}),
    ],
)
def test_knfsd_fsid_types(fsid_type: int, fsid: bytes, expect: dict[str, object]) -> None:
    fh = decode_nfs_fh(bytes((1, 0, fsid_type, 0x81)) + fsid + INO64)
    assert fh.fsid == fsid and fh.to_dict().items() >= expect.items()


# --- RFC v2 FUSE fids ----------------------------------------------------------------------


class _CFileHandle(ctypes.Structure):
    _fields_ = [
        ("size", ctypes.c_uint32),
        ("type", ctypes.c_uint32),
        ("handle", ctypes.c_uint8 * 0),
    ]


class _CInodeHandle(ctypes.Structure):
    _fields_ = [("nodeid", ctypes.c_uint64), ("generation", ctypes.c_uint32), ("fh", _CFileHandle)]


def test_fuse_inode_handle_c_layout_matches_the_platform_abi() -> None:
    assert ctypes.sizeof(_CInodeHandle) == fusefh.SIZEOF_FUSE_INODE_HANDLE == 24
    assert ctypes.sizeof(_CFileHandle) == fusefh.SIZEOF_FUSE_FILE_HANDLE == 8
    handle_at = _CInodeHandle.fh.offset + _CFileHandle.handle.offset
    assert handle_at == fusefh.HANDLE_OFFSET == 20


def _entry(nodeid: int, gen: int, fh_type: int, handle: bytes) -> bytes:
    """One entry laid out by hand from the C offsets: 8+4+4+4, handle, 4 bytes of slack."""
    return struct.pack("<QIII", nodeid, gen, len(handle), fh_type) + handle + bytes(4)


def test_0x91_and_0x92_back_to_back() -> None:
    child, parent = _entry(7, 2, 1, b"\xaa\xbb\xcc"), _entry(1, 0, 1, b"12345678")
    assert len(child) == 27  # sizeof(struct fuse_inode_handle) + 3
    fid = decode_fid(0x92, child + parent + b"\0")  # 59 bytes + 1 fill to the word boundary
    assert isinstance(fid, FuseFid) and fid.parent is not None
    assert (fid.inode.nodeid, fid.inode.handle, fid.parent.handle) == (
        7,
        b"\xaa\xbb\xcc",
        b"12345678",
    )
    assert fid.encode() == child + parent + b"\0"
    assert (fid.v2_length, fid.v2_max_len) == (59, 14)  # (len + lenp) >> 2 drops 3 bytes
    alone = decode_fid(0x91, child)
    assert alone == FuseFid(FuseInodeHandle(7, 2, 1, b"\xaa\xbb\xcc")) and alone.encode() == child
    with pytest.raises(HandleError, match=r"offset 27: 2 extra bytes after .* \(fill is 1\)"):
        decode_fid(0x91, child + b"\0\0")


def test_v2_encoder_model_puts_parent_at_sizeof_stride() -> None:
    child = FuseInodeHandle(7, 2, 1, b"ABCDEFGH")
    parent = FuseInodeHandle(1, 0, 1, b"12345678")
    out = v2_encode_fh(child, parent)
    assert (out.fid_type, out.max_len) == (0x92, 16)
    # handle[0]: nodeid, gen, size, type, first 4 handle bytes; handle[1] overwrites from 24 on.
    expect = struct.pack("<QIII", 7, 2, 8, 1) + b"ABCD" + struct.pack("<QIII", 1, 0, 8, 1)
    expect += b"12345678" + bytes(16)  # the 24 + 8 byte memcpy over-reads 16 bytes (zeroed)
    assert out.data == expect[:64]
    assert out.data != FuseFid(child, parent).encode()
    tight = v2_encode_fh(child, None, max_len=8)  # exactly 32 bytes, memcpy ends at 12 + 32
    assert (tight.fid_type, tight.overflow) == (0x91, 12)
    small = v2_encode_fh(child, parent, max_len=15)
    assert (small.fid_type, small.max_len, small.data) == (0xFF, 16, b"")


# --- malformed input: one exception, offset and reason ---------------------------------------


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda: decode_fid(0x81, INO64[:10]),
            "offset 8: generation truncated, need 4 bytes, have 2",
        ),
        (
            lambda: decode_fid(0x81, INO64 + b"\0"),
            "offset 12: 1 extra bytes after FILEID_INO64_GEN",
        ),
        (lambda: decode_fid(0x82, INO64), "offset 12: parent nodeid hi truncated"),
        (lambda: decode_fid(0xFF, b""), "offset 0: fid type 0xff is FILEID_INVALID"),
        (lambda: decode_fid(-1, b""), "offset 0: handle type -1 is not a u32"),
        (lambda: decode_fid(0x4D, bytes(129)), "offset 128: fid of 129 bytes exceeds 128"),
        (lambda: decode_fid(0, b"\0"), "offset 0: FILEID_ROOT carries no fid bytes"),
        (
            lambda: decode_fid(0x91, struct.pack("<QIII", 1, 0, 200, 0) + bytes(100)),
            "offset 12: handle[0] fh.size 200 exceeds 128",
        ),
        (
            lambda: decode_fid(0x91, struct.pack("<QIII", 1, 0, 9, 0) + b"x"),
            "offset 12: handle[0] fh.size 9 larger than the 1 bytes left",
        ),
        (lambda: decode_fid(0x92, _entry(1, 0, 0, b"ab")), "offset 26: handle[1] nodeid truncated"),
        (
            lambda: decode_nfs_fh(b"\x00\x00\x01\x81" + FSID101),
            "offset 0: fh_version 0 unsupported",
        ),
        (lambda: decode_nfs_fh(b"\x01\x01\x01\x81"), "offset 1: fh_auth_type 1, must be 0"),
        (lambda: decode_nfs_fh(b"\x01\x00\x08\x81"), "offset 2: unknown fh_fsid_type 8"),
        (lambda: decode_nfs_fh(b"\x01\x00\x01\xff"), "offset 3: fh_fileid_type 0xff"),
        (
            lambda: decode_nfs_fh(b"\x01\x00\x06\x81" + bytes(10)),
            "offset 4: fsid (FSID_UUID16) trunc",
        ),
        (lambda: decode_nfs_fh(b"\x01\x00\x01\x81" + FSID101 + INO64[:5]), "offset 12: nodeid lo"),
        (lambda: decode_nfs_fh(bytes(65), max_size=NFS3_FHSIZE), "offset 64: handle of 65 bytes"),
        (lambda: decode_nfs_fh(bytes(129)), "offset 128: handle of 129 bytes exceeds 128"),
    ],
)
def test_malformed_input_raises_handle_error(call, message: str) -> None:
    with pytest.raises(HandleError) as info:
        call()
    assert str(info.value).startswith(message)
    assert str(info.value) == f"offset {info.value.offset}: {info.value.reason}"
    assert isinstance(info.value, ValueError)


def test_constructors_refuse_values_that_do_not_fit() -> None:
    with pytest.raises(ValueError, match="nodeid"):
        Ino64GenFid(1 << 64, 0)
    with pytest.raises(ValueError, match="together"):
        Ino64GenFid(1, 0, parent_nodeid=1)
    with pytest.raises(ValueError, match="fill"):
        FuseFid(FuseInodeHandle(1, 0, 0, b"abcd"), fill=b"\0")
    with pytest.raises(ValueError, match="cannot sit"):
        KnfsdFh(1, FSID101, Ino64GenFid(1, 0, flags=FILEID_IS_CONNECTABLE))


# --- real kernel bytes: name_to_handle_at / open_by_handle_at on ext4 ------------------------

_libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD, AT_HANDLE_CONNECTABLE = -100, 0x002
FS_IOC_GETVERSION = 0x80087601  # _IOR('v', 1, long): the inode's i_generation


def _name_to_handle(path: str, flags: int = 0) -> tuple[int, bytes]:
    buf = ctypes.create_string_buffer(8 + 128)
    struct.pack_into("Ii", buf, 0, 128, 0)
    mount_id = ctypes.c_int()
    if _libc.name_to_handle_at(AT_FDCWD, os.fsencode(path), buf, ctypes.byref(mount_id), flags):
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), path)
    size, handle_type = struct.unpack_from("Ii", buf)
    return handle_type & 0xFFFFFFFF, buf.raw[8 : 8 + size]


def _open_by_handle(mount_path: str, handle_type: int, data: bytes) -> os.stat_result:
    buf = ctypes.create_string_buffer(struct.pack("II", len(data), handle_type) + data)
    mfd = os.open(mount_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fd = _libc.open_by_handle_at(mfd, buf, os.O_RDONLY)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
        try:
            return os.fstat(fd)
        finally:
            os.close(fd)
    finally:
        os.close(mfd)


def _generation(path: str) -> int:
    fd = os.open(path, os.O_RDONLY)
    try:
        return int.from_bytes(fcntl.ioctl(fd, FS_IOC_GETVERSION, bytes(8))[:4], "little")
    finally:
        os.close(fd)


def _fs_type(path: str) -> str:
    """The filesystem's type from statfs(2) (the mount table of a chroot does not show the
    mount that holds its root, so it cannot say)."""
    r = subprocess.run(["stat", "-f", "-c", "%T", path], capture_output=True, text=True,
                       check=True)
    return "ext4" if r.stdout.strip() == "ext2/ext3" else r.stdout.strip()


def test_real_ext4_handles_decode_and_reencode(tmp_path) -> None:
    if _fs_type(str(tmp_path)) != "ext4":
        pytest.skip(f"{tmp_path} is on {_fs_type(str(tmp_path))}, the test reads ext4 handles")
    path = tmp_path / "f"
    path.write_text("marker")
    st, dst = os.stat(path), os.stat(tmp_path)

    handle_type, data = _name_to_handle(str(path))
    fid = decode_fid(handle_type, data)
    assert isinstance(fid, Ino32GenFid) and fid.handle_type == handle_type
    assert (fid.ino, fid.generation) == (st.st_ino, _generation(str(path)))
    assert fid.encode() == data

    handle_type, data = _name_to_handle(str(path), AT_HANDLE_CONNECTABLE)
    fid = decode_fid(handle_type, data)
    assert isinstance(fid, Ino32GenFid) and fid.flags == FILEID_IS_CONNECTABLE
    assert (fid.parent_ino, fid.parent_generation) == (dst.st_ino, _generation(str(tmp_path)))

    handle_type, data = _name_to_handle(str(tmp_path), AT_HANDLE_CONNECTABLE)
    fid = decode_fid(handle_type, data)
    assert fid.flags == FILEID_IS_CONNECTABLE | FILEID_IS_DIR and fid.parent_generation is None

    # A fid we build from the decoded numbers must open the same inode through the kernel.
    built = Ino32GenFid(st.st_ino, _generation(str(path)))
    opened = _open_by_handle(str(tmp_path), built.handle_type, built.encode())
    assert (opened.st_ino, opened.st_dev) == (st.st_ino, st.st_dev)
