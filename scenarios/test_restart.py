"""Server restart: unmount and mount again on the same source, as an NFS server sees a
FUSE server restart. Handles from before must not open another object.

After the restart the tree is walked in reverse order before any old handle is presented,
so a server that numbers nodeids by lookup order hands the old numbers to other objects —
as it would for NFS clients that come back in a different order."""

import os

import pytest

from nfsconf.lab import SEED_DIRS, SEED_FILES
from nfsconf.scenario import KINDS, expect_same_or

SEEDS = {"file": SEED_FILES, "dir": SEED_DIRS}


def _restart_and_decode(lab, evidence, kind):
    objs = [lab.obj(rel) for rel in SEEDS[kind]]
    for obj in objs:
        lab.encode(obj)
    evidence.encoded("first", objs[0].handle)
    lab.restart()
    for rel in sorted(SEED_FILES + SEED_DIRS, reverse=True):
        os.stat(lab.path(rel))
    decoded = [lab.decode(obj) for obj in objs]
    outcomes = []
    for obj, got in zip(objs, decoded, strict=True):
        lab.refresh(obj)  # what the name reaches now: new st_dev, maybe new inode numbers
        outcomes.append(evidence.decoded(obj.rel, obj, got))
    evidence.note("outcomes", dict(zip(SEEDS[kind], outcomes, strict=True)))
    wrong = [o.rel for o, out in zip(objs, outcomes, strict=True) if out == "other"]
    if wrong:
        evidence.wrong_object = True
        raise AssertionError(f"WRONG OBJECT: after restart the handles of {', '.join(wrong)} "
                             "opened other objects")
    return outcomes


@pytest.mark.scenario("RESTART-SAFE", "MUST")
@pytest.mark.parametrize("kind", KINDS)
def test_restart_safe(lab, evidence, kind):
    """RESTART-SAFE: after a server restart each old handle opens the same object or gives
    ESTALE; never another object, never EIO."""
    for outcome in _restart_and_decode(lab, evidence, kind):
        expect_same_or(outcome, ("ESTALE",), "after restart")


@pytest.mark.scenario("RESTART", "SHOULD", claim="restart")
@pytest.mark.parametrize("kind", KINDS)
def test_restart_survives(lab, evidence, kind):
    """RESTART: after a server restart every old handle still opens the same object."""
    outcomes = _restart_and_decode(lab, evidence, kind)
    bad = [o for o in outcomes if o != "same"]
    assert not bad, f"after restart: {len(bad)} of {len(outcomes)} handles: {sorted(set(bad))}"
