"""`nfsconf bench`: what users wait for, each figure next to an anchor measured in the same
run. decode.py: cold handle decodes against mergerfs -o noforget; matrix.py: the local
matrix at --jobs 1 and N, and where its time goes; vm.py: a knfsd lane against the bare
boot of the same kernel."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path


def run_nfsconf(out: Path, args: list[str], profiles: list[str], k: str | None) -> float:
    """`nfsconf run --out OUT ARGS` over PROFILES and -k K, as users run it (a child
    process); its wall time. A run that did not complete (exit 2 or more) raises."""
    argv = [sys.executable, "-m", "nfsconf.cli", "run", "--out", str(out), *args]
    for p in profiles:
        argv += ["--profile", p]
    if k:
        argv += ["-k", k]
    started = time.monotonic()
    r = subprocess.run(argv, capture_output=True, text=True)
    seconds = time.monotonic() - started
    if r.returncode not in (0, 1):
        raise RuntimeError(f"nfsconf run {' '.join(args)} exited {r.returncode}: "
                           f"{(r.stderr or r.stdout).strip().splitlines()[-1:]}")
    return seconds
