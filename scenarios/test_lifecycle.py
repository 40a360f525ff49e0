"""Objects that change under their handles: unlink, reuse, links, renames, moves."""

import errno
import os

import pytest

from nfsconf.requires import Unsupported
from nfsconf.scenario import CACHES, KINDS, expect_same_or, scenario
from nfsconf.transports.base import as_errno_name


@scenario("UNLINK", "MUST", certify=1)
@pytest.mark.parametrize("cache", CACHES)
@pytest.mark.parametrize("kind", KINDS)
def test_unlink_stale(cell, kind, cache):
    """UNLINK: once every name of an object is gone, its handle gives ESTALE (or ENOENT),
    never an fd."""
    obj = cell.fresh(kind, "victim")
    cell.encode(obj, kind)
    cell.remove(obj)
    if cache == "cold":
        cell.drop_caches()
    outcome = cell.decode(obj, f"after unlink ({cache})")
    assert as_errno_name(outcome) in ("ESTALE", "ENOENT"), f"removed {kind} decoded: {outcome}"


@scenario("REUSE", "MUST", certify=1, needs=("writable",))
def test_reuse_never_opens_new(cell):
    """REUSE: create, encode, unlink 16 files, then create 256 new ones; no old handle may
    open any new file (a reused nodeid or inode number must come with a new generation)."""
    cell.require_writable()
    cell.path("old").mkdir()
    old = [cell.make_file(f"old/f{i}") for i in range(16)]
    for obj in old:
        cell.encode_unrecorded(obj)
    cell.encoded("first", old[0].handle)
    for obj in old:
        os.unlink(cell.path(obj.rel))
    cell.drop_caches()
    cell.path("new").mkdir()
    new = [cell.make_file(f"new/f{i}") for i in range(256)]
    outcomes: dict[str, int] = {}
    for i, obj in enumerate(old):
        outcome = cell.decode(obj, f"old{i}")
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    cell.note("outcomes", outcomes)
    cell.note("new_files", len(new))
    reused = {o.identity.st_ino for o in old} & {n.identity.st_ino for n in new}
    cell.note("inode_numbers_reused", len(reused))
    assert "same" not in outcomes, "a handle of an unlinked file still opened it"


@scenario("OPEN-UNLINKED", "MUST", certify=1)
@pytest.mark.parametrize("cache", CACHES)
def test_open_unlinked(cell, cache):
    """OPEN-UNLINKED: a file unlinked while still open decodes to itself or gives ESTALE;
    never another object."""
    obj = cell.fresh("file", "held")
    cell.encode(obj, "file")
    fd = os.open(cell.path(obj.rel), os.O_RDONLY)
    try:
        os.unlink(cell.path(obj.rel))
        cell.make_file("held")  # the name now belongs to a new file
        if cache == "cold":
            cell.drop_caches()
        outcome = cell.decode(obj, f"while open ({cache})")
    finally:
        os.close(fd)
    expect_same_or(outcome, ("ESTALE", "ENOENT"), "unlinked open file")


# a dead connection is no answer about hard links; any other link(2) error is the server
# saying it makes none (servers differ in which errno they use: EPERM, ENOSYS, EIO, ENOENT)
_DEAD = (errno.ENOTCONN, errno.ECONNABORTED)


@scenario("HARDLINK", "SHOULD", claim="cold_decode", certify=2, advisory=True)
def test_hardlink(cell):
    """HARDLINK: link a second name, unlink the first; after drop_caches the handle still
    opens the file (or ESTALE where its 0x92 fid cannot fit under subtree_check, as in
    DEC-COLD: the protocol's limit, never another object)."""
    obj = cell.fresh("file", "first")

    def relink() -> None:
        try:
            os.link(cell.path("first"), cell.path("second"))
        except OSError as e:
            if e.errno in _DEAD:
                raise
            raise Unsupported(f"server does not make hard links: link(2) gave "
                              f"{errno.errorcode.get(e.errno, e.errno)}") from e
        os.unlink(cell.path("first"))

    outcome = cell.roundtrip(obj, change=relink, label="after unlink of first name")
    assert outcome == "same" or cell.stale_by_protocol(obj, outcome), (
        f"hard-linked file: {outcome}")


@scenario("RENAME", "SHOULD", claim="cold_decode", certify=2, advisory=True)
@pytest.mark.parametrize("kind", KINDS)
def test_rename(cell, kind):
    """RENAME: rename within the directory; after drop_caches the handle opens the object
    (a file: or ESTALE where its 0x92 fid cannot fit under subtree_check, as in DEC-COLD)."""
    obj = cell.fresh(kind, "before")
    outcome = cell.roundtrip(obj, change=lambda: os.rename(cell.path("before"),
                                                           cell.path("after")),
                             label="after rename")
    assert outcome == "same" or cell.stale_by_protocol(obj, outcome), (
        f"renamed {kind}: {outcome}")


@scenario("MOVE", "SHOULD", claim="cold_decode", certify=2, advisory=True,
          needs=("writable",))
@pytest.mark.parametrize("kind", KINDS)
def test_move(cell, kind):
    """MOVE: move to another directory; after drop_caches the handle opens the object
    (for a directory, reconnecting through its new parent; a file: or ESTALE where its 0x92
    fid cannot fit under subtree_check, as in DEC-COLD)."""
    cell.require_writable()
    cell.path("from").mkdir()
    cell.path("to").mkdir()
    obj = cell.fresh(kind, "from/obj")
    outcome = cell.roundtrip(obj, change=lambda: os.rename(cell.path("from/obj"),
                                                           cell.path("to/obj")),
                             label="after move")
    assert outcome == "same" or cell.stale_by_protocol(obj, outcome), (
        f"moved {kind}: {outcome}")
