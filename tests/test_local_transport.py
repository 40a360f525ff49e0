"""The local transport against real FUSE mounts: the truths measured in DESIGN.md."""

import errno
import os
import tempfile

import pytest

from nfsconf.handles import decode_fid
from nfsconf.lab import Lab
from nfsconf.servers.builtin import find_profile
from nfsconf.transports.base import verdict_of
from nfsconf.transports.local import connectable_supported, handle_size, name_to_handle

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for FUSE mounts")


@pytest.fixture
def bindfs_lab():
    with Lab(find_profile("bindfs")) as lab:
        yield lab


def test_fuse_handle_is_ino64_gen(bindfs_lab):
    h = name_to_handle(bindfs_lab.path("d0/f1"))
    assert (h.fh_type, len(h.data)) == (0x81, 12)
    fid = decode_fid(h.fh_type, h.data)
    assert fid.nodeid > 1  # 1 is the root
    root = decode_fid(*_type_data(name_to_handle(bindfs_lab.path(""))))
    assert root.nodeid == 1


def _type_data(h):
    return h.fh_type, h.data


def test_size_query_and_eoverflow(bindfs_lab):
    path = bindfs_lab.path("d0/f1")
    assert handle_size(path) == 12
    assert handle_size(path, connectable=True) == 24
    with pytest.raises(OSError) as e:
        name_to_handle(path, size=11)
    assert e.value.errno == errno.EOVERFLOW


def test_connectable_carries_parent(bindfs_lab):
    h = name_to_handle(bindfs_lab.path("d0/f1"), connectable=True)
    assert h.fh_type == 0x10082
    fid = decode_fid(h.fh_type, h.data)
    parent = decode_fid(*_type_data(name_to_handle(bindfs_lab.path("d0"))))
    assert fid.parent_nodeid == parent.nodeid


def test_bindfs_cold_decode_is_estale(bindfs_lab):
    obj = bindfs_lab.obj("d0/f1")
    with bindfs_lab.pinned(obj):  # warm for sure: held from before the encode
        bindfs_lab.encode(obj)
        assert verdict_of(obj.identity, bindfs_lab.decode(obj)) == "same"
    bindfs_lab.drop_caches()
    assert verdict_of(obj.identity, bindfs_lab.decode(obj)) == "ESTALE"


def test_bindfs_noforget_cold_decode_same_file():
    with Lab(find_profile("bindfs-noforget")) as lab:
        obj = lab.obj("d0/f1")
        lab.encode(obj)
        lab.drop_caches()
        got = lab.decode(obj)
        assert verdict_of(obj.identity, got) == "same"
        assert got.identity.marker == lab.markers["d0/f1"]


def test_identity_tells_objects_apart(bindfs_lab):
    """The identity check must call a different file 'other', not 'same'."""
    a, b = bindfs_lab.obj("d0/f1"), bindfs_lab.obj("d0/f2")
    with bindfs_lab.pinned(b):
        bindfs_lab.encode(b)
        assert verdict_of(a.identity, bindfs_lab.decode(b)) == "other"


def test_connectable_probe_on_tmpfs_still_finds_the_flag(monkeypatch, tmpfs_dir):
    # tmpfs has no fh_to_parent: a connectable handle of a file there is EOPNOTSUPP on a
    # kernel that knows AT_HANDLE_CONNECTABLE (the knfsd guest's tmpdir is such a tmpfs)
    probe = tempfile.NamedTemporaryFile(dir=tmpfs_dir)
    with probe, pytest.raises(OSError) as e:
        name_to_handle(probe.name, connectable=True)
    if e.value.errno == errno.EINVAL:
        pytest.skip("kernel < 6.13: no AT_HANDLE_CONNECTABLE at all")
    assert e.value.errno == errno.EOPNOTSUPP  # what the probe meets there
    monkeypatch.setattr(tempfile, "tempdir", str(tmpfs_dir))
    known, why = connectable_supported.__wrapped__()
    assert known and "EOPNOTSUPP" in why, why
