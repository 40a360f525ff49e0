"""pynfs's file-handle codes, replayed after drop_caches through the raw NFSv4.1 client.

pynfs (PUTFH1*, LOOKP*, SVFH*/RSFH*) presents every handle while the server still has the
object cached, so on FUSE exports whose handles die with the cache it passes them all.
These are the same operations on a handle taken before the caches were dropped: the
report shows both, side by side (`pynfs PUTFH1r PASS, cold PUTFH FAIL NFS4ERR_STALE`).
"""

import pytest

from nfsconf.nfs import nfs4
from nfsconf.scenario import KINDS, scenario


def _v4_fh(cell, rel):
    """The object's NFSv4 handle, taken by name while it is cached."""
    fh = cell.transport.v4_handle(cell.path(rel))
    cell.note(f"fh {rel}", fh.hex())
    return fh


def _status(res):
    bad = res.failed
    return f"{bad.op.name}: {bad.status.name}" if bad is not None else res.status.name


@scenario("V4-COLD-PUTFH", "SHOULD", claim="cold_decode", where="nfs", certify=2,
          advisory=True)
@pytest.mark.parametrize("kind", KINDS)
def test_cold_putfh(cell, kind):
    """V4-COLD-PUTFH: pynfs's PUTFH1, after drop_caches: PUTFH of a handle taken before,
    then GETFH and GETATTR, give back the same handle and the object's fileid."""
    obj = cell.seed(kind)
    fh = _v4_fh(cell, obj.rel)
    cell.drop_caches()
    res = cell.transport.v4.compound([nfs4.putfh(fh), nfs4.getfh(),
                                      nfs4.getattr(nfs4.Attr.FILEID)])
    cell.note("cold", _status(res))
    if not res.ok:
        cell.failed_with((res.failed or res).status.name)
    assert res.ok, f"cold PUTFH: {_status(res)}"
    assert res.fh == fh, f"GETFH gave {res.fh.hex()} for {fh.hex()}"
    assert res.attrs["fileid"] == obj.identity.st_ino, f"fileid {res.attrs['fileid']}"


@scenario("V4-COLD-SAVEFH", "SHOULD", claim="cold_decode", where="nfs", certify=2,
          advisory=True)
def test_cold_savefh_restorefh(cell):
    """V4-COLD-SAVEFH: pynfs's SVFH/RSFH, after drop_caches: PUTFH a, SAVEFH, PUTFH b,
    RESTOREFH, GETFH gives a back, and GETATTR a's fileid."""
    a, b = cell.seed("file"), cell.seed("dir")
    fa, fb = _v4_fh(cell, a.rel), _v4_fh(cell, b.rel)
    cell.drop_caches()
    res = cell.transport.v4.compound([nfs4.putfh(fa), nfs4.savefh(), nfs4.putfh(fb),
                                      nfs4.restorefh(), nfs4.getfh(),
                                      nfs4.getattr(nfs4.Attr.FILEID)])
    cell.note("cold", _status(res))
    if not res.ok:
        cell.failed_with((res.failed or res).status.name)
    assert res.ok, f"cold SAVEFH/RESTOREFH: {_status(res)}"
    assert res.fh == fa, "RESTOREFH did not give the saved handle back"
    assert res.attrs["fileid"] == a.identity.st_ino
