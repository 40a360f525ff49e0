"""Parents: connectable handles and directory reconnection through '..'."""

import errno

import pytest

from nfsconf.scenario import decode, seed_obj


@pytest.mark.scenario("PARENT-CONN", "SHOULD", claim="cold_decode")
@pytest.mark.local_only
def test_connectable_reconnects(lab, evidence):
    """PARENT-CONN: after drop_caches a connectable file handle decodes to the file and the
    kernel reconnects it to its parent (the fd's path is the file's path, not '/')."""
    obj = seed_obj(lab, "file")
    try:
        evidence.encoded("connectable", lab.encode(obj, connectable=True))
    except OSError as e:
        if e.errno == errno.EINVAL:
            pytest.skip("kernel lacks AT_HANDLE_CONNECTABLE (name_to_handle_at: EINVAL)")
        raise
    lab.drop_caches()
    outcome = decode(lab, evidence, obj, "cold connectable")
    assert outcome == "same", f"connectable cold decode: {outcome}"
    path = evidence.data["decodes"]["cold connectable"]["path"]
    assert path == str(lab.path(obj.rel)), f"decoded fd is disconnected: path {path!r}"


@pytest.mark.scenario("PARENT-DIR", "SHOULD", claim="cold_decode")
def test_directory_reconnects(lab, evidence):
    """PARENT-DIR: after drop_caches a nested directory's handle decodes and reconnects
    through LOOKUP(nodeid, '..') up to the root."""
    obj = seed_obj(lab, "dir")
    evidence.encoded("dir", lab.encode(obj))
    lab.drop_caches()
    outcome = decode(lab, evidence, obj, "cold dir")
    assert outcome == "same", f"directory cold decode: {outcome}"
    path = evidence.data["decodes"]["cold dir"]["path"]
    if path is not None:  # NFS transports have no path to show; the decode is the check
        assert path == str(lab.path(obj.rel)), f"directory not reconnected: path {path!r}"
