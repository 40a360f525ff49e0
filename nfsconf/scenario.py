"""Small steps the scenarios share: picking objects, removing them, judging decodes."""

from __future__ import annotations

import os

from nfsconf.lab import Lab
from nfsconf.plugin import Evidence
from nfsconf.transports.base import MARKER_NAME, Obj, as_errno_name

# Seed objects every profile serves, read-only images included.
SEED = {"file": "d0/f1", "dir": "d1/sub"}
KINDS = ("file", "dir")


def seed_obj(lab: Lab, kind: str) -> Obj:
    return lab.obj(SEED[kind])


def fresh_obj(lab: Lab, kind: str, rel: str) -> Obj:
    return lab.make_file(rel) if kind == "file" else lab.make_dir(rel)


def remove(lab: Lab, rel: str, kind: str) -> None:
    path = lab.path(rel)
    if kind == "dir":
        os.unlink(path / MARKER_NAME)
        os.rmdir(path)
    else:
        os.unlink(path)


def decode(lab: Lab, ev: Evidence, obj: Obj, label: str) -> str:
    """Decode OBJ's handle, record it, and fail at MUST level at once if it opened another
    object: that is never acceptable, whatever the scenario is about."""
    outcome = ev.decoded(label, obj, lab.decode(obj))
    if outcome == "other":
        ev.wrong_object = True
        got = ev.data["decodes"][label]["got"]
        raise AssertionError(f"WRONG OBJECT: {label}: handle of {obj.rel} opened ino "
                             f"{got['st_ino']} marker {got['marker']!r}")
    return outcome


def expect_same_or(outcome: str, allowed: tuple[str, ...], what: str) -> None:
    """OUTCOME is 'same' or one of the ALLOWED errno names (an NFS status counts as the
    errno it stands for: NFS3ERR_STALE as ESTALE)."""
    assert outcome == "same" or as_errno_name(outcome) in allowed, (
        f"{what}: {outcome} (expected the same object or {', '.join(allowed)})")
