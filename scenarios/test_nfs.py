"""NFS wire checks: what the NFS server makes of the FUSE handles, over NFSv3 and NFSv4.1.
They run on the ganesha and knfsd transports."""

import random

import pytest

from nfsconf.handles import (
    FILEID_FUSE_WITH_PARENT,
    FILEID_FUSE_WITHOUT_PARENT,
    FILEID_INO64_GEN,
    FILEID_INO64_GEN_PARENT,
    NFS3_FHSIZE,
    FuseFid,
    HandleError,
    decode_nfs_fh,
)
from nfsconf.nfs import nfs4
from nfsconf.scenario import KINDS, scenario
from nfsconf.transports.base import Handle


@scenario("NFS-FH", "MUST", where="nfs", certify=1)
@pytest.mark.parametrize("kind", KINDS)
def test_nfs_handle_carries_fuse_fid(cell, kind):
    """NFS-FH: the NFS handle carries the FUSE fid the local transport sees for the same
    object. knfsd: fh_version 1, fileid type 0x81 (0x82 with subtree_check, the parent's
    pair after it), the same nodeid and generation; with LOOKUP_HANDLE 0x91 (0x92), except
    that under subtree_check a file whose 0x92 fid cannot fit NFSv3's handle gets the 0x91
    (the protocol's limit: Cell.parent_left_out). Ganesha: the fid's 12 bytes inside."""
    obj = cell.seed(kind)
    fh = cell.encode_unrecorded(obj)
    local = cell.local_fid(obj.rel)
    cell.note("nfs_fh", fh.data.hex())
    cell.encoded("local", local)
    if cell.transport.knfsd:
        try:
            decoded = decode_nfs_fh(fh.data)
        except HandleError as e:
            raise AssertionError(f"knfsd handle does not decode: {e}") from e
        cell.note("knfsd_fh", decoded.to_dict())
        want = FILEID_INO64_GEN_PARENT if cell.transport.subtree_check and kind == "file" \
            else FILEID_INO64_GEN
        if local.fh_type == FILEID_FUSE_WITHOUT_PARENT:  # the server's own handles
            want = FILEID_FUSE_WITH_PARENT if want == FILEID_INO64_GEN_PARENT \
                else FILEID_FUSE_WITHOUT_PARENT
            if want == FILEID_FUSE_WITH_PARENT and (why := cell.parent_left_out(obj, fh)):
                cell.note("parent_left_out", why)
                want = FILEID_FUSE_WITHOUT_PARENT
        assert decoded.fileid_type == want, f"fileid type 0x{decoded.fileid_type:x}"
        assert decoded.fid is not None
        n = len(local.data)
        assert decoded.fid.encode()[:n] == local.data, (
            f"NFS fid {decoded.fid.encode()[:n].hex()} != local fid {local.data.hex()}")
        if want in (FILEID_INO64_GEN_PARENT, FILEID_FUSE_WITH_PARENT):
            parent = cell.local_fid(obj.rel.rsplit("/", 1)[0])
            assert decoded.fid.encode()[n:n + len(parent.data)] == parent.data, (
                "parent part is not the parent")
        root = decode_nfs_fh(cell.transport.root_fh)
        assert root.fileid_type == 0, f"export root fileid type 0x{root.fileid_type:x}"
    else:
        assert local.data in fh.data, f"FUSE fid {local.data.hex()} not in {fh.data.hex()}"


@scenario("NFS-V4-FH", "MUST", where="nfs", certify=1)
@pytest.mark.parametrize("kind", KINDS)
def test_v4_putfh_getfh_round_trip(cell, kind):
    """NFS-V4-FH: over an NFSv4.1 session, PUTFH of a handle then GETFH gives the same
    bytes, and GETATTR's fileid is the st_ino the FUSE mount reports. knfsd gives NFSv3 the
    same handle, except where a LOOKUP_HANDLE file's 0x92 fid cannot fit NFSv3's 64 bytes
    under subtree_check: there v3 has the child's 0x91 fid and v4 the full 0x92 of the same
    child (Cell.parent_left_out)."""
    obj = cell.seed(kind)
    path = cell.transport.v4_path(cell.path(obj.rel))
    res = cell.transport.v4.lookup_path(path)
    assert res.ok, f"LOOKUP {path}: {res.status.name}"
    fh4 = res.fh
    cell.note("v4_fh", fh4.hex())
    again = cell.transport.v4.compound([nfs4.putfh(fh4), nfs4.getfh(),
                                        nfs4.getattr(nfs4.Attr.FILEID)])
    assert again.ok, f"PUTFH+GETFH: {again.status.name}"
    assert again.fh == fh4, f"GETFH gave {again.fh.hex()} for {fh4.hex()}"
    assert again.attrs["fileid"] == obj.identity.st_ino
    if cell.transport.knfsd:
        v3 = cell.encode_unrecorded(obj)
        if why := cell.parent_left_out(obj, v3):
            cell.note("v3_parent_left_out", why)
            f3, f4 = decode_nfs_fh(v3.data, NFS3_FHSIZE), decode_nfs_fh(fh4)
            assert isinstance(f4.fid, FuseFid) and f4.fid.parent is not None, (
                f"NFSv4 handle: fid type 0x{f4.fileid_type:x}, not the 0x92 its 128 bytes hold")
            assert isinstance(f3.fid, FuseFid) and f3.fid.inode == f4.fid.inode and \
                (f3.fsid_type, f3.fsid) == (f4.fsid_type, f4.fsid), (
                    f"knfsd v3 handle {v3.data.hex()} and v4 handle {fh4.hex()} name "
                    "different objects")
        else:
            assert v3.data == fh4, "knfsd v3 and v4 handles differ"


@scenario("NFS-LOOKUPP", "SHOULD", claim="cold_decode", where="nfs", certify=2)
def test_lookupp_after_drop(cell):
    """NFS-LOOKUPP: after drop_caches, LOOKUPP from a directory handle (v4.1) and LOOKUP
    '..' (v3) reach its parent: the server asks the FUSE server for '..'."""
    obj = cell.seed("dir")
    parent_rel = obj.rel.rsplit("/", 1)[0]
    v4 = cell.transport.v4
    child = v4.lookup_path(cell.transport.v4_path(cell.path(obj.rel)))
    parent = v4.lookup_path(cell.transport.v4_path(cell.path(parent_rel)))
    assert child.ok and parent.ok
    dir_fh = cell.encode_unrecorded(obj).data
    cell.drop_caches()
    up4 = v4.compound([nfs4.putfh(child.fh), nfs4.lookupp(), nfs4.getfh(),
                       nfs4.getattr(nfs4.Attr.FILEID)])
    cell.note("lookupp", up4.status.name)
    up3 = cell.transport.client.lookup(dir_fh, "..")
    cell.note("lookup_dotdot", up3.status.name)
    if not up4.ok:
        cell.failed_with(up4.status.name)
    assert up4.ok, f"LOOKUPP after drop_caches: {up4.status.name}"
    assert up4.attrs["fileid"] == cell.obj(parent_rel).identity.st_ino
    assert up3.ok, f"LOOKUP '..' after drop_caches: {up3.status.name}"
    assert up3.attr.fileid == cell.obj(parent_rel).identity.st_ino


@scenario("NFS-BADHANDLE", "MUST", where="nfs", certify=1)
def test_mutated_nfs_handles(cell, options):
    """NFS-BADHANDLE: mutated, short and long NFS handles get an error (BADHANDLE, STALE,
    ...) or reach the object they were made from, or the object whose handle they exactly
    are; never any other object and never a hang."""
    rels = ["d0/f1", "d1", "d1/sub", "top"]
    objs = {rel: cell.obj(rel) for rel in rels}
    fhs = {rel: cell.encode_unrecorded(objs[rel]).data for rel in rels}
    rng = random.Random(options.fuzz_seed)
    cases: list[tuple[str, str, bytes]] = []
    for rel, fh in fhs.items():
        for i in range(len(fh)):
            flipped = bytearray(fh)
            flipped[i] ^= 1 << rng.randrange(8)
            cases.append((rel, f"flip byte {i}", bytes(flipped)))
        cases += [(rel, f"truncate to {n}", fh[:n]) for n in range(0, len(fh), 3)]
        cases += [(rel, f"extend by {n}", fh + rng.randbytes(n)) for n in (1, 4, 36)]
        cases.append((rel, "random", rng.randbytes(len(fh))))
    outcomes: dict[str, int] = {}
    wrong = []
    for rel, detail, data in cases:
        # an RPC-level refusal (GARBAGE_ARGS) comes back as an error; a dead connection or
        # a reply our client cannot read raises and makes the cell an ERROR
        got = cell.transport.decode(Handle(0, data))
        if not got.opened:
            outcome = f"error:{got.error}"
        else:
            opened = cell.opened_rel(got.identity, rels)
            # the bytes exactly name an object when they carry its own FUSE fid as it is
            # now (the server's handle wraps the kernel's fid, whatever else it holds)
            outcome = ("original" if opened == rel else
                       "named" if opened is not None and cell.local_fid(opened).data in data
                       else "unverified" if got.identity.marker is None else "wrong")
            if outcome == "wrong":
                wrong.append({"from": rel, "mutation": detail, "hex": data.hex(),
                              "opened": opened or got.identity.marker})
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    cell.note("handles_tried", len(cases))
    cell.note("outcomes", outcomes)
    cell.note("wrong", wrong[:20])
    if wrong:
        cell.wrong_object()
        raise AssertionError(f"WRONG OBJECT: {len(wrong)} mutated NFS handles reached other "
                             f"objects, e.g. {wrong[0]['mutation']} of {wrong[0]['from']}")
