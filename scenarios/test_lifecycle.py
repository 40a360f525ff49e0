"""Objects that change under their handles: unlink, reuse, links, renames, moves."""

import errno
import os

import pytest

from nfsconf.scenario import KINDS, decode, expect_same_or, fresh_obj, remove
from nfsconf.transports.base import as_errno_name

CACHES = ("warm", "cold")


@pytest.mark.scenario("UNLINK", "MUST")
@pytest.mark.parametrize("cache", CACHES)
@pytest.mark.parametrize("kind", KINDS)
def test_unlink_stale(lab, evidence, kind, cache):
    """UNLINK: once every name of an object is gone, its handle gives ESTALE (or ENOENT),
    never an fd."""
    obj = fresh_obj(lab, kind, "victim")
    evidence.encoded(kind, lab.encode(obj))
    remove(lab, obj.rel, kind)
    if cache == "cold":
        lab.drop_caches()
    outcome = decode(lab, evidence, obj, f"after unlink ({cache})")
    assert as_errno_name(outcome) in ("ESTALE", "ENOENT"), f"removed {kind} decoded: {outcome}"


@pytest.mark.scenario("REUSE", "MUST")
def test_reuse_never_opens_new(lab, evidence):
    """REUSE: create, encode, unlink 16 files, then create 256 new ones; no old handle may
    open any new file (a reused nodeid or inode number must come with a new generation)."""
    lab.require_writable()
    lab.path("old").mkdir()
    old = [lab.make_file(f"old/f{i}") for i in range(16)]
    for obj in old:
        lab.encode(obj)
    evidence.encoded("first", old[0].handle)
    for obj in old:
        os.unlink(lab.path(obj.rel))
    lab.drop_caches()
    lab.path("new").mkdir()
    new = [lab.make_file(f"new/f{i}") for i in range(256)]
    outcomes: dict[str, int] = {}
    for i, obj in enumerate(old):
        outcome = decode(lab, evidence, obj, f"old{i}")
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    evidence.note("outcomes", outcomes)
    evidence.note("new_files", len(new))
    reused = {o.identity.st_ino for o in old} & {n.identity.st_ino for n in new}
    evidence.note("inode_numbers_reused", len(reused))
    assert "same" not in outcomes, "a handle of an unlinked file still opened it"


@pytest.mark.scenario("OPEN-UNLINKED", "MUST")
@pytest.mark.parametrize("cache", CACHES)
def test_open_unlinked(lab, evidence, cache):
    """OPEN-UNLINKED: a file unlinked while still open decodes to itself or gives ESTALE;
    never another object."""
    obj = fresh_obj(lab, "file", "held")
    evidence.encoded("file", lab.encode(obj))
    fd = os.open(lab.path(obj.rel), os.O_RDONLY)
    try:
        os.unlink(lab.path(obj.rel))
        lab.make_file("held")  # the name now belongs to a new file
        if cache == "cold":
            lab.drop_caches()
        outcome = decode(lab, evidence, obj, f"while open ({cache})")
    finally:
        os.close(fd)
    expect_same_or(outcome, ("ESTALE", "ENOENT"), "unlinked open file")


@pytest.mark.scenario("HARDLINK", "SHOULD", claim="cold_decode")
def test_hardlink(lab, evidence):
    """HARDLINK: link a second name, unlink the first; after drop_caches the handle still
    opens the file."""
    obj = fresh_obj(lab, "file", "first")
    evidence.encoded("file", lab.encode(obj))
    try:
        os.link(lab.path("first"), lab.path("second"))
    except OSError as e:
        pytest.skip(f"server does not make hard links: link(2) gave "
                    f"{errno.errorcode.get(e.errno, e.errno)}")
    os.unlink(lab.path("first"))
    lab.drop_caches()
    outcome = decode(lab, evidence, obj, "after unlink of first name")
    assert outcome == "same", f"hard-linked file: {outcome}"


@pytest.mark.scenario("RENAME", "SHOULD", claim="cold_decode")
@pytest.mark.parametrize("kind", KINDS)
def test_rename(lab, evidence, kind):
    """RENAME: rename within the directory; after drop_caches the handle opens the object."""
    obj = fresh_obj(lab, kind, "before")
    evidence.encoded(kind, lab.encode(obj))
    os.rename(lab.path("before"), lab.path("after"))
    lab.drop_caches()
    outcome = decode(lab, evidence, obj, "after rename")
    assert outcome == "same", f"renamed {kind}: {outcome}"


@pytest.mark.scenario("MOVE", "SHOULD", claim="cold_decode")
@pytest.mark.parametrize("kind", KINDS)
def test_move(lab, evidence, kind):
    """MOVE: move to another directory; after drop_caches the handle opens the object
    (for a directory, reconnecting through its new parent)."""
    lab.require_writable()
    lab.path("from").mkdir()
    lab.path("to").mkdir()
    obj = fresh_obj(lab, kind, "from/obj")
    evidence.encoded(kind, lab.encode(obj))
    os.rename(lab.path("from/obj"), lab.path("to/obj"))
    lab.drop_caches()
    outcome = decode(lab, evidence, obj, "after move")
    assert outcome == "same", f"moved {kind}: {outcome}"
