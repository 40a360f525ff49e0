"""Decoding: presenting a handle back, with the object in cache and after a cache drop."""

import errno
import os

import pytest

from nfsconf.scenario import KINDS, expect_same_or, scenario


@scenario("DEC-WARM", "MUST", certify=1)
@pytest.mark.parametrize("kind", KINDS)
def test_decode_warm(cell, kind):
    """DEC-WARM: with the inode still cached, the handle opens the object it named."""
    outcome = cell.roundtrip(cell.seed(kind), cold=False)
    assert outcome == "same", f"warm decode: {outcome}"


@scenario("DEC-COLD-SAFE", "MUST", certify=1)
@pytest.mark.parametrize("kind", KINDS)
def test_decode_cold_safe(cell, kind):
    """DEC-COLD-SAFE: after drop_caches the handle opens the same object or fails with
    ESTALE; never another object, never another error."""
    expect_same_or(cell.roundtrip(cell.seed(kind)), ("ESTALE",), "cold decode")


@scenario("DEC-COLD", "SHOULD", claim="cold_decode", certify=2)
@pytest.mark.parametrize("kind", KINDS)
def test_decode_cold(cell, kind):
    """DEC-COLD: after drop_caches the handle still opens the same object (the server kept
    its nodeids and answers LOOKUP(nodeid, ".") — and "..", for a directory). Under
    subtree_check, where a LOOKUP_HANDLE file's 0x92 fid cannot fit the handle (NFSv3), the
    kernel's 0x91 fid may give ESTALE instead, never another object (the protocol's limit:
    Cell.parent_left_out)."""
    obj = cell.seed(kind)
    outcome = cell.roundtrip(obj)
    assert outcome == "same" or cell.stale_by_protocol(obj, outcome), (
        f"cold decode: {outcome}" + cell.unsent_handles(["cold"]))


@scenario("STABLE", "SHOULD", claim="cold_decode", certify=2)
@pytest.mark.parametrize("kind", KINDS)
def test_handle_stable(cell, kind):
    """STABLE: encoding the same object again after drop_caches, reached again by name,
    gives the same handle bytes; otherwise an NFS client sees a new file."""
    obj = cell.seed(kind)
    before = cell.encode(obj, "before")
    cell.drop_caches()
    try:
        after = cell.encode(obj, "after")
    except OSError as e:
        cell.failed_with(errno.errorcode.get(e.errno or 0, str(e.errno)))
        raise AssertionError(f"re-encoding by name after drop_caches failed: {e}") from e
    assert (after.fh_type, after.data) == (before.fh_type, before.data), (
        f"handle changed: {before.data.hex()} -> {after.data.hex()}")


@scenario("READDIR-INO", "SHOULD", where="local", certify=1, advisory=True)
def test_readdir_ino(cell):
    """READDIR-INO: readdir's d_ino equals stat's st_ino for every entry (READDIRPLUS
    fileids and GETATTR fileids must agree for NFS clients)."""
    mismatches = {}
    checked = 0
    for rel in ("", "d0", "d1"):
        for entry in os.scandir(cell.path(rel)):
            st = os.lstat(entry.path)
            checked += 1
            if entry.inode() != st.st_ino:
                mismatches[os.path.join(rel, entry.name)] = [entry.inode(), st.st_ino]
    cell.note("entries_checked", checked)
    cell.note("mismatches", mismatches)
    assert checked > 0
    assert not mismatches, f"{len(mismatches)} of {checked} entries: d_ino != st_ino"
