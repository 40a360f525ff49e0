"""Cold handle-decode throughput of a FUSE mount: what an NFS server sees after cache loss.

``cold_decode_rate(mnt, n)`` creates n files through the mount, encodes each with
name_to_handle_at, drops the kernel caches, then times open_by_handle_at + close of all n.
Each decode of an uncached inode costs the FUSE server LOOKUP(nodeid, ".") + OPEN + RELEASE
(+ FLUSH), so this measures a server's cold path, not the kernel's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time

from . import sysutil as su


def drop_caches() -> None:
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3")


def cold_decode_rate(mountpoint: str, n: int, keep: bool = False) -> float:
    """Decoded files per second, cold. Raises OSError if any handle fails to decode."""
    if n <= 0:
        raise ValueError("n must be positive")
    work = os.path.join(mountpoint, f".nfsconf-bench-{os.getpid()}")
    os.mkdir(work)
    try:
        handles: list[bytes] = []
        dfd = os.open(work, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for i in range(n):
                name = f"f{i:06d}"
                os.close(os.open(name, os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=dfd))
                htype, data, _mnt = su.name_to_handle_at(dfd, name)
                handles.append(su.make_handle_buffer(htype, data))
        finally:
            os.close(dfd)
        mfd = os.open(mountpoint, os.O_RDONLY | os.O_DIRECTORY)
        try:
            drop_caches()
            open_h, close = su.open_by_handle_at, os.close
            t0 = time.perf_counter()
            for h in handles:
                close(open_h(mfd, h, os.O_RDONLY))
            elapsed = time.perf_counter() - t0
        finally:
            os.close(mfd)
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    return n / elapsed


def _wait_mounted(mnt: str, proc: subprocess.Popen[bytes], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not su.is_mountpoint(mnt):
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited {proc.returncode} before mounting")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{mnt} not mounted after {timeout}s")
        time.sleep(0.05)


def mergerfs_rate(n: int, base: str) -> float:
    """cold_decode_rate of ``mergerfs -o noforget,inodecalc=path-hash`` over a fresh dir."""
    exe = shutil.which("mergerfs")
    if exe is None:
        raise FileNotFoundError("mergerfs is not installed")
    src, mnt = os.path.join(base, "mergerfs-src"), os.path.join(base, "mergerfs-mnt")
    os.makedirs(src, exist_ok=True)
    os.makedirs(mnt, exist_ok=True)
    proc = subprocess.Popen([exe, "-o", "noforget,inodecalc=path-hash", "-f", src, mnt],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_mounted(mnt, proc)
        return cold_decode_rate(mnt, n)
    finally:
        if su.is_mountpoint(mnt):
            su.umount2(mnt, su.MNT_DETACH)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def refserver_rate(n: int, base: str, **knobs: object) -> float:
    """cold_decode_rate of the reference server (default: stable nodeids, no trace)."""
    from .control import RefServer

    src, mnt = os.path.join(base, "ref-src"), os.path.join(base, "ref-mnt")
    os.makedirs(src, exist_ok=True)
    os.makedirs(mnt, exist_ok=True)
    knobs.setdefault("nodeid", "stable")
    srv = RefServer(workdir=os.path.join(base, "ref-work"), trace=False)
    try:
        srv.start(src, mnt, **knobs)
        return cold_decode_rate(mnt, n)
    finally:
        srv.stop()


def compare(n: int = 5000, rounds: int = 3) -> dict[str, object]:
    """Reference server vs mergerfs, interleaved in one run; best of ``rounds`` each."""
    ref: list[float] = []
    mfs: list[float] = []
    with tempfile.TemporaryDirectory(prefix="nfsconf-bench-") as base:
        for _ in range(rounds):
            ref.append(refserver_rate(n, base))
            mfs.append(mergerfs_rate(n, base))
    return {"n": n, "refserver": ref, "mergerfs": mfs, "ratio": max(ref) / max(mfs)}


def main(argv: list[str] | None = None) -> int:
    import argparse
    import json

    ap = argparse.ArgumentParser(prog="python -m nfsconf.fuse.bench",
                                 description="cold decode rate: reference server vs mergerfs")
    ap.add_argument("-n", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    print(json.dumps(compare(args.n, args.rounds)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
