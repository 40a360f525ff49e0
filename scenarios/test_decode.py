"""Decoding: presenting a handle back, with the object in cache and after a cache drop."""

import errno
import os

import pytest

from nfsconf.scenario import KINDS, decode, expect_same_or, seed_obj


@pytest.mark.scenario("DEC-WARM", "MUST")
@pytest.mark.parametrize("kind", KINDS)
def test_decode_warm(lab, evidence, kind):
    """DEC-WARM: with the inode still cached, the handle opens the object it named."""
    obj = seed_obj(lab, kind)
    with lab.pinned(obj):  # from before the encode: nothing may evict it in between
        evidence.encoded(kind, lab.encode(obj))
        outcome = decode(lab, evidence, obj, "warm")
    assert outcome == "same", f"warm decode: {outcome}"


@pytest.mark.scenario("DEC-COLD-SAFE", "MUST")
@pytest.mark.parametrize("kind", KINDS)
def test_decode_cold_safe(lab, evidence, kind):
    """DEC-COLD-SAFE: after drop_caches the handle opens the same object or fails with
    ESTALE; never another object, never another error."""
    obj = seed_obj(lab, kind)
    evidence.encoded(kind, lab.encode(obj))
    lab.drop_caches()
    expect_same_or(decode(lab, evidence, obj, "cold"), ("ESTALE",), "cold decode")


@pytest.mark.scenario("DEC-COLD", "SHOULD", claim="cold_decode")
@pytest.mark.parametrize("kind", KINDS)
def test_decode_cold(lab, evidence, kind):
    """DEC-COLD: after drop_caches the handle still opens the same object (the server kept
    its nodeids and answers LOOKUP(nodeid, ".") — and "..", for a directory)."""
    obj = seed_obj(lab, kind)
    evidence.encoded(kind, lab.encode(obj))
    lab.drop_caches()
    outcome = decode(lab, evidence, obj, "cold")
    assert outcome == "same", f"cold decode: {outcome}"


@pytest.mark.scenario("STABLE", "SHOULD", claim="cold_decode")
@pytest.mark.parametrize("kind", KINDS)
def test_handle_stable(lab, evidence, kind):
    """STABLE: encoding the same object again after drop_caches, reached again by name,
    gives the same handle bytes; otherwise an NFS client sees a new file."""
    obj = seed_obj(lab, kind)
    before = lab.encode(obj)
    evidence.encoded("before", before)
    lab.drop_caches()
    try:
        after = lab.encode(obj)
    except OSError as e:
        evidence.errno = errno.errorcode.get(e.errno, str(e.errno))
        raise AssertionError(f"re-encoding by name after drop_caches failed: {e}") from e
    evidence.encoded("after", after)
    assert (after.fh_type, after.data) == (before.fh_type, before.data), (
        f"handle changed: {before.data.hex()} -> {after.data.hex()}")


@pytest.mark.scenario("READDIR-INO", "SHOULD")
@pytest.mark.local_only
def test_readdir_ino(lab, evidence):
    """READDIR-INO: readdir's d_ino equals stat's st_ino for every entry (READDIRPLUS
    fileids and GETATTR fileids must agree for NFS clients)."""
    mismatches = {}
    checked = 0
    for rel in ("", "d0", "d1"):
        for entry in os.scandir(lab.path(rel)):
            st = os.lstat(entry.path)
            checked += 1
            if entry.inode() != st.st_ino:
                mismatches[os.path.join(rel, entry.name)] = [entry.inode(), st.st_ino]
    evidence.note("entries_checked", checked)
    evidence.note("mismatches", mismatches)
    assert checked > 0
    assert not mismatches, f"{len(mismatches)} of {checked} entries: d_ino != st_ino"
