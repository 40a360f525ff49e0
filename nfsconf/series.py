"""A patch series as `nfsconf kernel build` and `kernel walk` read it: a directory of `git
format-patch` files (in name order, or in the order of a quilt `series` file) or one mbox,
and its hash (the sha256 of each patch's sha256, in order), which names a build."""

from __future__ import annotations

import hashlib
import mailbox
from dataclasses import dataclass
from pathlib import Path

from nfsconf.errors import BuildError


@dataclass(frozen=True)
class Patch:
    name: str
    data: bytes


def read_series(path: Path) -> list[Patch]:
    """The patches of a series, in the order they apply."""
    path = path.expanduser()
    if not path.exists():
        raise BuildError(f"series {path} does not exist")
    if path.is_file():
        return _mbox(path)
    order = path / "series"
    if order.is_file():  # quilt's order file; '#' starts a comment
        names = [ln.split("#", 1)[0].split()[0] for ln in order.read_text().splitlines()
                 if ln.split("#", 1)[0].strip()]
        missing = [n for n in names if not (path / n).is_file()]
        if missing:
            raise BuildError(f"{order} names patches that are not there: {', '.join(missing)}")
        files = [path / n for n in names]
    else:
        files = sorted(p for p in path.iterdir()
                       if p.is_file() and p.suffix in (".patch", ".diff", ".mbox", ".eml"))
    if not files:
        raise BuildError(f"{path}: no *.patch, *.diff or *.mbox files (and no quilt series file)")
    patches: list[Patch] = []
    for f in files:
        patches += _mbox(f) if f.suffix in (".mbox", ".eml") else [Patch(f.name, f.read_bytes())]
    return patches


def _mbox(path: Path) -> list[Patch]:
    box = mailbox.mbox(str(path), create=False)
    msgs = list(box)
    if not msgs:  # a single patch file without an mbox From_ line
        return [Patch(path.name, path.read_bytes())]
    out = []
    for i, msg in enumerate(msgs, 1):
        subject = " ".join(str(msg.get("Subject", "")).split())
        out.append(Patch(f"{path.name}#{i} {subject[:70]}", msg.as_bytes()))
    return out


def series_hash(patches: list[Patch]) -> str:
    h = hashlib.sha256()
    for p in patches:
        h.update(hashlib.sha256(p.data).digest())
    return h.hexdigest()
