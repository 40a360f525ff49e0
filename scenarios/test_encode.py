"""Encoding: what name_to_handle_at hands out for a FUSE object."""

import errno

import pytest

from nfsconf.environment import kernel_lookup_handle
from nfsconf.handles import (
    FILEID_FUSE_WITH_PARENT,
    FILEID_FUSE_WITHOUT_PARENT,
    FILEID_INO64_GEN,
    FILEID_INO64_GEN_PARENT,
    FILEID_IS_CONNECTABLE,
    FILEID_IS_DIR,
    decode_fid,
)
from nfsconf.scenario import KINDS, scenario
from nfsconf.transports.local import handle_size, name_to_handle

# bytes of the fid for each plain type; 0x91/0x92 carry a server handle of varying size
FIXED_LEN = {FILEID_INO64_GEN: 12, FILEID_INO64_GEN_PARENT: 24}


def _names_an_object(handle) -> bool:
    """Whether the fid names an object: a nodeid (never 0), or for 0x91 the server's handle
    alone (nodeid and generation 0 beside a handle, the suite's fix 0013)."""
    fid = decode_fid(handle.fh_type, handle.data)
    if handle.fh_type == FILEID_FUSE_WITHOUT_PARENT:
        return fid.inode.nodeid > 0 or fid.inode.by_handle_alone
    return fid.nodeid > 0


@scenario("ENC-TYPE", "MUST", where="local", certify=1)
@pytest.mark.parametrize("kind", KINDS)
def test_encode_type(cell, kind):
    """ENC-TYPE: a FUSE object encodes as 0x81 (12 bytes: nodeid, generation), or as 0x91
    when the server negotiated LOOKUP_HANDLE; the nodeid is never 0 (but for a 0x91 fid that
    names its object by the server's handle alone) and the codec reads it.

    The reference server's INIT says which to expect; of another server only the kernel's
    offer is known, so on a kernel that offers LOOKUP_HANDLE either type is right."""
    handle = cell.encode(cell.seed(kind), kind)
    neg = cell.negotiated()
    if neg is not None:
        speaks = bool(neg.get("dialect"))
        want = (FILEID_FUSE_WITHOUT_PARENT,) if speaks else (FILEID_INO64_GEN,)
        server = f"a server that {'negotiated' if speaks else 'did not negotiate'}"
    elif kernel_lookup_handle()[0] is not None:
        want = (FILEID_INO64_GEN, FILEID_FUSE_WITHOUT_PARENT)
        server = "a server on a kernel that offers"
    else:
        want = (FILEID_INO64_GEN,)
        server = "a server on a kernel that does not offer"
    assert handle.fh_type in want, f"fid type 0x{handle.fh_type:x} from {server} LOOKUP_HANDLE"
    if handle.fh_type in FIXED_LEN:
        assert len(handle.data) == FIXED_LEN[handle.fh_type], (
            f"type 0x{handle.fh_type:x} with {len(handle.data)} bytes")
    assert "fields_error" not in cell.handle_record, cell.handle_record["fields_error"]
    assert _names_an_object(handle), (
        f"nodeid 0 is never a valid FUSE inode: {handle.data.hex()}")


@scenario("ENC-SIZE", "MUST", where="local", certify=1)
@pytest.mark.parametrize("kind", KINDS)
def test_encode_size_query(cell, kind):
    """ENC-SIZE: a zero-sized buffer gets EOVERFLOW and the exact size the handle needs;
    a buffer one byte short gets EOVERFLOW too."""
    path = cell.path(cell.seed(kind).rel)
    needed = handle_size(path)
    handle = name_to_handle(path)
    cell.note("size_query", needed)
    cell.encoded(kind, handle)
    assert needed == len(handle.data), f"size query said {needed}, handle has {len(handle.data)}"
    with pytest.raises(OSError) as short:
        name_to_handle(path, size=needed - 1)
    assert short.value.errno == errno.EOVERFLOW, f"short buffer gave {short.value}"


@scenario("ENC-CONN", "SHOULD", where="local", certify=1, advisory=True)
@pytest.mark.parametrize("kind", KINDS)
def test_encode_connectable(cell, kind):
    """ENC-CONN: AT_HANDLE_CONNECTABLE on a file gives 0x82|IS_CONNECTABLE whose parent
    part is the parent directory's own (nodeid, generation); a directory is connectable by
    itself and gives 0x81|IS_DIR|IS_CONNECTABLE."""
    obj = cell.seed(kind)
    handle = cell.require_connectable(obj)
    plain = name_to_handle(cell.path(obj.rel))
    base, flags = handle.fh_type & 0xFFFF, handle.fh_type & ~0xFFFF
    if kind == "dir":
        assert flags == FILEID_IS_CONNECTABLE | FILEID_IS_DIR, f"flags 0x{flags:x}"
        assert base == plain.fh_type and handle.data == plain.data
        return
    assert flags == FILEID_IS_CONNECTABLE, f"flags 0x{flags:x}"
    assert base in (FILEID_INO64_GEN_PARENT, FILEID_FUSE_WITH_PARENT), f"type 0x{base:x}"
    parent = cell.encode(cell.obj(obj.rel.rsplit("/", 1)[0]), "parent")
    if base == FILEID_INO64_GEN_PARENT:  # 0x92 is LH-CONN's business
        assert handle.data[:12] == plain.data, "child part differs from the plain handle"
        assert handle.data[12:] == parent.data, "parent part is not the parent's handle"
