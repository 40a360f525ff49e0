"""Splitting a matrix over machines: `--shard K/N` runs the cells of the (profile, scenario)
pairs whose hash falls in part K of N. The hash is of the names only, so every machine, every
kernel and every run agrees on which part a cell belongs to; the N parts together are the
whole matrix, each cell in exactly one."""

from __future__ import annotations

import hashlib

from nfsconf.errors import UsageError


def parse(spec: str) -> tuple[int, int]:
    """'2/4' -> (2, 4); K counts from 1."""
    try:
        k, n = (int(x) for x in spec.split("/"))
    except ValueError:
        raise UsageError(f"--shard {spec!r}: give K/N, e.g. 1/4") from None
    if not 1 <= k <= n:
        raise UsageError(f"--shard {spec!r}: K must be 1..N")
    return k, n


def part_of(profile: str, scenario: str, n: int) -> int:
    """The part (1..N) the cells of PROFILE x SCENARIO belong to."""
    digest = hashlib.sha256(f"{profile}\0{scenario}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % n + 1
