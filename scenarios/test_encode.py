"""Encoding: what name_to_handle_at hands out for a FUSE object."""

import errno

import pytest

from nfsconf.scenario import KINDS, seed_obj
from nfsconf.transports.local import handle_size, name_to_handle

FILEID_INO64_GEN = 0x81
FILEID_INO64_GEN_PARENT = 0x82
FILEID_FUSE_WITHOUT_PARENT = 0x91
FILEID_FUSE_WITH_PARENT = 0x92
FILEID_IS_CONNECTABLE = 0x10000
FILEID_IS_DIR = 0x20000
# bytes of the fid for each plain type; 0x91/0x92 carry a server handle of varying size
FIXED_LEN = {FILEID_INO64_GEN: 12, FILEID_INO64_GEN_PARENT: 24}


@pytest.mark.scenario("ENC-TYPE", "MUST")
@pytest.mark.local_only
@pytest.mark.parametrize("kind", KINDS)
def test_encode_type(lab, evidence, kind):
    """ENC-TYPE: a FUSE object encodes as 0x81 (12 bytes: nodeid, generation) or, with
    LOOKUP_HANDLE, 0x91; the nodeid is never 0 and the codec reads it."""
    obj = seed_obj(lab, kind)
    handle = lab.encode(obj)
    evidence.encoded(kind, handle)
    assert handle.fh_type in (FILEID_INO64_GEN, FILEID_FUSE_WITHOUT_PARENT), (
        f"unexpected fid type 0x{handle.fh_type:x}")
    if handle.fh_type in FIXED_LEN:
        assert len(handle.data) == FIXED_LEN[handle.fh_type], (
            f"type 0x{handle.fh_type:x} with {len(handle.data)} bytes")
    fields = evidence.handle.get("fields") or {}
    assert "fields_error" not in evidence.handle, evidence.handle["fields_error"]
    assert fields.get("nodeid") != 0, "nodeid 0 is never a valid FUSE inode"


@pytest.mark.scenario("ENC-SIZE", "MUST")
@pytest.mark.local_only
@pytest.mark.parametrize("kind", KINDS)
def test_encode_size_query(lab, evidence, kind):
    """ENC-SIZE: a zero-sized buffer gets EOVERFLOW and the exact size the handle needs;
    a buffer one byte short gets EOVERFLOW too."""
    path = lab.path(seed_obj(lab, kind).rel)
    needed = handle_size(path)
    handle = name_to_handle(path)
    evidence.note("size_query", needed)
    evidence.encoded(kind, handle)
    assert needed == len(handle.data), f"size query said {needed}, handle has {len(handle.data)}"
    with pytest.raises(OSError) as short:
        name_to_handle(path, size=needed - 1)
    assert short.value.errno == errno.EOVERFLOW, f"short buffer gave {short.value}"


@pytest.mark.scenario("ENC-CONN", "SHOULD")
@pytest.mark.local_only
@pytest.mark.parametrize("kind", KINDS)
def test_encode_connectable(lab, evidence, kind):
    """ENC-CONN: AT_HANDLE_CONNECTABLE on a file gives 0x82|IS_CONNECTABLE whose parent
    part is the parent directory's own (nodeid, generation); a directory is connectable by
    itself and gives 0x81|IS_DIR|IS_CONNECTABLE."""
    obj = seed_obj(lab, kind)
    try:
        handle = lab.encode(obj, connectable=True)
    except OSError as e:
        if e.errno == errno.EINVAL:
            pytest.skip("kernel lacks AT_HANDLE_CONNECTABLE (name_to_handle_at: EINVAL)")
        raise
    evidence.encoded(f"{kind}-connectable", handle)
    plain = name_to_handle(lab.path(obj.rel))
    base, flags = handle.fh_type & 0xFFFF, handle.fh_type & ~0xFFFF
    if kind == "dir":
        assert flags == FILEID_IS_CONNECTABLE | FILEID_IS_DIR, f"flags 0x{flags:x}"
        assert base == plain.fh_type and handle.data == plain.data
        return
    assert flags == FILEID_IS_CONNECTABLE, f"flags 0x{flags:x}"
    assert base in (FILEID_INO64_GEN_PARENT, FILEID_FUSE_WITH_PARENT), f"type 0x{base:x}"
    parent = name_to_handle(lab.path(obj.rel).parent)
    evidence.encoded("parent", parent)
    if base == FILEID_INO64_GEN_PARENT:
        assert handle.data[:12] == plain.data, "child part differs from the plain handle"
        assert handle.data[12:] == parent.data, "parent part is not the parent's handle"
