"""Server restart: unmount and mount again on the same source, as an NFS server sees a
FUSE server restart. Handles from before must not open another object.

After the restart the tree is walked in reverse order before any old handle is presented,
so a server that numbers nodeids by lookup order hands the old numbers to other objects —
as it would for NFS clients that come back in a different order. And the restart lands
within the wall clock's second of the old instance's start, so a server that derives its
generation numbers from the clock's seconds gives the old ones out again — as after a
crash its supervisor restarts at once: when a restart crossed a second and no handle met
another object, it is done again (twice at most, while a restart takes under 0.9 s) from
an instance started early in a second and its handles."""

import os
import time

import pytest

from nfsconf.lab import SEED_DIRS, SEED_FILES
from nfsconf.scenario import KINDS, expect_same_or, scenario


def _restart_and_decode(cell, kind):
    objs = cell.seeds(kind)
    label = "after restart"
    for attempt in range(3):
        if attempt:  # a new instance early in a second, whose handles the restart replays
            left = 1 - time.time() % 1
            if left < 0.6:
                time.sleep(left)
            cell.restart()
            for obj in objs:
                cell.refresh(obj)
            label = f"after restart {attempt + 1}, within one second"
        for obj in objs:
            cell.encode_unrecorded(obj)
        cell.encoded("first" if not attempt else f"first {attempt + 1}", objs[0].handle)
        started = time.monotonic()
        same_second = cell.restart()
        slow = time.monotonic() - started > 0.9  # no restart of it can land in one second
        for rel in sorted(SEED_FILES + SEED_DIRS, reverse=True):
            os.stat(cell.path(rel))
        for obj in objs:
            cell.refresh(obj)  # what the name reaches now: new st_dev, maybe new inode numbers
        outcomes = cell.decode_all(objs, label)  # another object ends the cell here
        if same_second or slow:
            break
    cell.note("outcomes", dict(zip((o.rel for o in objs), outcomes, strict=True)))
    return outcomes


@scenario("RESTART-SAFE", "MUST", certify=3)
@pytest.mark.parametrize("kind", KINDS)
def test_restart_safe(cell, kind):
    """RESTART-SAFE: after a server restart each old handle opens the same object or gives
    ESTALE; never another object, never EIO."""
    for outcome in _restart_and_decode(cell, kind):
        expect_same_or(outcome, ("ESTALE",), "after restart")


@scenario("RESTART", "SHOULD", claim="restart", certify=3)
@pytest.mark.parametrize("kind", KINDS)
def test_restart_survives(cell, kind):
    """RESTART: after a server restart every old handle still opens the same object."""
    outcomes = _restart_and_decode(cell, kind)
    bad = [o for o in outcomes if o != "same"]
    assert not bad, f"after restart: {len(bad)} of {len(outcomes)} handles: {sorted(set(bad))}"
