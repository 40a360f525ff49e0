"""Cold handle-decode throughput of a FUSE mount: what an NFS server sees after cache loss.

``cold_decode_rate(mnt, n)`` creates n files through the mount, encodes each with
name_to_handle_at, drops the kernel caches, then times open_by_handle_at + close of all n.
Each decode of an uncached inode costs the FUSE server LOOKUP(nodeid, ".") + OPEN + RELEASE
(+ FLUSH), so this measures a server's cold path, not the kernel's.
"""

from __future__ import annotations

import ctypes
import os
import shutil
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
        handles: list[ctypes.Array[ctypes.c_char]] = []
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
