"""Cells taken as they come: the guests that split one kernel's matrix (`--jobs N`) each
collect the whole matrix and run a cell only once they hold its claim, a symlink in the
run's claims directory named after the cell and pointing at the guest's run directory.

The host's filesystem creates a symlink whole or refuses it (EEXIST), through hostfs and 9p
alike, so no two guests run one cell, and a guest done early takes the next free cell
instead of idling while another works through a longer share: the guests end within a
cell of each other. A fixed split by hash (`--shard`, for machines that share no directory)
left make run's three guests ending 19 s apart. A guest booted again after a kernel crash
finds its own claims by their target and goes on with them.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, unquote

CLAIMS = "claims"  # in the run directory, beside the guests' directories
PLAN = "planned.json"  # in the claims directory: every cell of the matrix, in order
PREFIX = "c-"  # a claim is never ".", "..", the plan or its temporary, whatever the cell


@dataclass
class Claims:
    root: Path
    owner: str  # the guest's run directory's name, the target of its claims
    mine: set[str] = field(default_factory=set)  # cells
    others: set[str] = field(default_factory=set)

    @classmethod
    def open(cls, root: Path, owner: str) -> Claims:
        """The claims made so far, read once: later ones are learnt by trying."""
        claims = cls(Path(root), owner)
        for node, holder in holders(claims.root).items():
            (claims.mine if holder == owner else claims.others).add(node)
        return claims

    def take(self, node: str) -> bool:
        """Whether this guest runs NODE: it held the claim already or has just made it."""
        if node in self.mine:
            return True
        if node in self.others:
            return False
        try:  # one path component, read back by holders()
            os.symlink(self.owner, self.root / (PREFIX + quote(node, safe="")))
        except FileExistsError:
            self.others.add(node)
            return False
        self.mine.add(node)
        return True

    def write_plan(self, nodes: list[str]) -> None:
        """Every cell of the matrix, once for the run (the guests collect the same)."""
        path = self.root / PLAN
        if path.exists():
            return
        tmp = self.root / f".{PLAN}.{self.owner}"  # guests' PIDs repeat: name it by owner
        tmp.write_text(json.dumps(nodes))
        os.replace(tmp, path)


def holders(root: Path) -> dict[str, str]:
    """Cell -> the run directory name holding its claim."""
    try:
        entries = list(os.scandir(root))
    except FileNotFoundError:
        return {}
    return {unquote(e.name.removeprefix(PREFIX)): os.readlink(e.path) for e in entries
            if e.is_symlink() and e.name.startswith(PREFIX)}


def plan(root: Path) -> list[str]:
    """The matrix the guests collected ([] before any guest did)."""
    try:
        return list(json.loads((Path(root) / PLAN).read_text()))
    except (OSError, ValueError):
        return []


def held(root: Path, owner: str) -> list[str]:
    """The cells OWNER holds the claims of, in the matrix's order."""
    taken = holders(root)
    return [node for node in plan(root) if taken.get(node) == owner]


def unclaimed(root: Path) -> list[str]:
    """The cells of the matrix no guest has taken."""
    taken = holders(root)
    return [node for node in plan(root) if node not in taken]
