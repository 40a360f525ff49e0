"""`nfsconf bench decode`: cold handle-decode throughput, what an NFS server sees after it
lost its caches. Every figure is reported next to an anchor measured in the same run
(mergerfs -o noforget,inodecalc=path-hash), rounds interleaved so both see the same load."""

from __future__ import annotations

import os
import shutil
import time
from typing import Any

from nfsconf.lab import Lab
from nfsconf.servers.builtin import find_profile
from nfsconf.transports.local import name_to_handle, open_by_handle

ANCHOR = "mergerfs-noforget"


def cold_decode_rate(lab: Lab, n: int) -> float:
    """Create N files through the mount, encode each, drop caches, then time
    open_by_handle_at + close of all N. Raises OSError if any handle fails to decode."""
    if n <= 0:
        raise ValueError("n must be positive")
    work = lab.path(f"bench-{os.getpid()}")
    work.mkdir()
    try:
        handles = []
        for i in range(n):
            path = work / f"f{i:06d}"
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o644))
            handles.append(name_to_handle(path))
        lab.drop_caches()
        mount_fd = os.open(lab.mnt, os.O_RDONLY | os.O_DIRECTORY)
        try:
            started = time.perf_counter()
            for h in handles:
                os.close(open_by_handle(mount_fd, h))
            elapsed = time.perf_counter() - started
        finally:
            os.close(mount_fd)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return n / elapsed


def decode_bench(names: list[str], n: int, rounds: int) -> dict[str, Any]:
    # the reference server as every run has it: tracing every request
    profiles = [find_profile(p) for p in [*names, ANCHOR]]
    rates: dict[str, list[float]] = {p.name: [] for p in profiles}
    for r in range(rounds):
        for p in profiles:
            with Lab(p) as lab:
                rates[p.name].append(cold_decode_rate(lab, n))
            print(f"round {r + 1}/{rounds}: {p.name} {rates[p.name][-1]:,.0f} files/s",
                  flush=True)
    best = {name: max(v) for name, v in rates.items()}
    return {"n": n, "rounds": rounds, "anchor": ANCHOR, "rates": rates, "best": best,
            "ratio_to_anchor": {k: v / best[ANCHOR] for k, v in best.items()}}


def render(result: dict[str, Any]) -> str:
    from tabulate import tabulate

    rows = [[name, f"{best:,.0f}", f"{result['ratio_to_anchor'][name]:.2f}"]
            for name, best in result["best"].items()]
    return tabulate(rows, ["profile", "best files/s", f"ratio to {result['anchor']}"],
                    disable_numparse=True)  # "0.60" stays "0.60"
