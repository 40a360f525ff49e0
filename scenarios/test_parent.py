"""Parents: connectable handles and directory reconnection through '..'."""

from nfsconf.scenario import scenario


@scenario("PARENT-CONN", "SHOULD", claim="cold_decode", where="local", certify=2)
def test_connectable_reconnects(cell):
    """PARENT-CONN: after drop_caches a connectable file handle decodes to the file and the
    kernel reconnects it to its parent (the fd's path is the file's path, not '/')."""
    obj = cell.seed("file")
    cell.require_connectable(obj)
    cell.drop_caches()
    outcome = cell.decode(obj, "cold connectable")
    assert outcome == "same", f"connectable cold decode: {outcome}"
    path = cell.decoded("cold connectable")["path"]
    assert path == str(cell.path(obj.rel)), f"decoded fd is disconnected: path {path!r}"


@scenario("PARENT-DIR", "SHOULD", claim="cold_decode", certify=2)
def test_directory_reconnects(cell):
    """PARENT-DIR: after drop_caches a nested directory's handle decodes and reconnects
    through LOOKUP(nodeid, '..') up to the root."""
    obj = cell.seed("dir")
    outcome = cell.roundtrip(obj, label="cold dir")
    assert outcome == "same", f"directory cold decode: {outcome}"
    path = cell.decoded("cold dir")["path"]
    if path is not None:  # NFS transports have no path to show; the decode is the check
        assert path == str(cell.path(obj.rel)), f"directory not reconnected: path {path!r}"
