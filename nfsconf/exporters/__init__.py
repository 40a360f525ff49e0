"""NFS servers that export a lab's FUSE mount on 127.0.0.1: NFS-Ganesha on the host
(ganesha.py) and knfsd in the kernel under test (knfsd.py, inside the VM guest)."""

from __future__ import annotations

from typing import Protocol


class Exporter(Protocol):
    """Makes one directory reachable over NFS on 127.0.0.1."""

    knfsd: bool  # the kernel's NFS server: its handles are knfsd_fh around the kernel's fid
    subtree_check: bool

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def settle(self, *, purge: bool = False) -> str | None:
        """Wait until the server has closed the files it let go of (with PURGE: first let go
        of every file it keeps open only as a cache); what was still pending, or None."""
        ...

    @property
    def nfs_port(self) -> int: ...

    @property
    def mount_port(self) -> int: ...

    @property
    def mount_path(self) -> str: ...

    @property
    def v4_path(self) -> str: ...
