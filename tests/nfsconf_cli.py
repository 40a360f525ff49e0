"""The command line as users run it: `python -m nfsconf.cli` in a child process."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"  # CI clones the project beside it


def nfsconf(*args: str, timeout: float = 600, env: dict[str, str] | None = None,
            cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "nfsconf.cli", *args], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=cwd)


AS_ROOT = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (FUSE mounts, VMs)")


def needs(program: str, package: str) -> pytest.MarkDecorator:
    return pytest.mark.skipif(shutil.which(program) is None, reason=f"{package} not installed")


def engine_processes(since: float) -> list[str]:
    """Kernel-engine processes (qemu, vng, User-Mode Linux and its guest processes) this
    test process's children started at or after SINCE (a time.time()): what a VM test must
    not leave running. VM tests run on both pytest-xdist workers, so a process is this
    worker's when it or an ancestor carries the worker's name in its environment, or its
    command line names the worker's TMPDIR (UML's uml_dir: a guest process left behind by
    its kernel has no other trace)."""
    import psutil

    worker = os.environ.get("PYTEST_XDIST_WORKER")
    tmpdir = os.environ.get("TMPDIR", "")

    def mine(p: psutil.Process, argv: list[str]) -> bool:
        if worker is None:
            return True  # one test process: every engine process is its own
        if tmpdir and any(tmpdir in a for a in argv):
            return True
        try:
            for q in [p, *p.parents()]:
                if q.environ().get("PYTEST_XDIST_WORKER") == worker:
                    return True
        except psutil.Error:
            pass
        return False

    found = []
    for p in psutil.process_iter(["pid", "cmdline", "create_time"]):
        argv = p.info["cmdline"] or []
        if p.info["create_time"] is None or p.info["create_time"] < since - 1 or not argv:
            continue
        uml = "rootfstype=hostfs" in argv
        if (uml or Path(argv[0]).name.startswith(("qemu-system", "vng", "virtme"))) \
                and mine(p, argv):
            found.append(f"{p.info['pid']} {' '.join(argv)[:120]}")
    return found


def build_uml_kernel(*series: Path) -> Path:
    """`nfsconf kernel build --arch um` of Debian sid's source with SERIES applied in order
    (cached after the first time): the tree, for `run --kernel`. Tests that need it build
    it: they never SKIP for want of a kernel."""
    for s in series:
        assert s.exists(), f"{s} is missing: CI clones beside ../shared"
    r = nfsconf("kernel", "build", "--arch", "um", "--base", "debian:sid",
                *(a for s in series for a in ("--series", str(s))), timeout=3600)
    assert r.returncode == 0, r.stderr[-3000:]
    tree = Path(r.stdout.strip().splitlines()[-1])
    assert (tree / "linux").is_file()
    return tree

