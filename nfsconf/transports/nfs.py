"""NFS transports: the lab's FUSE mount exported by an NFS server (NFS-Ganesha on the host,
or knfsd inside the VM), handles taken and presented back by the project's raw NFSv3 client.

An NFS handle names an object within the export, and the export is the FUSE mount, so a
decoded object's identity is (fileid from GETATTR, the FUSE mount's st_dev, the marker read
over NFS): comparable with what the local mount reports for the same name."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from nfsconf.exporters import Exporter
from nfsconf.handles import NFS3_FHSIZE

if TYPE_CHECKING:
    from nfsconf.exporters.knfsd import Knfsd
from nfsconf.nfs import nfs4
from nfsconf.nfs.mount3 import Mount3Client
from nfsconf.nfs.nfs3 import Nfs3Client
from nfsconf.nfs.nfs4 import Nfs4Client
from nfsconf.nfs.rpc import RpcError, RpcRejected
from nfsconf.nfs.status import FileType, Nfs3Status
from nfsconf.transports.base import MARKER_NAME, NFS_FH, Decoded, Handle, Identity


def _status_name(status: Nfs3Status) -> str:
    return status.name if isinstance(status, Nfs3Status) else str(status)


# NFS3ERR_X and NFS4ERR_X, by X
_ERRNO_OF = {"STALE": errno.ESTALE, "NOENT": errno.ENOENT, "BADHANDLE": errno.EBADF,
             "IO": errno.EIO}


def _errno_of(status_name: str) -> int:
    return _ERRNO_OF.get(status_name.partition("ERR_")[2], errno.EIO)


@dataclass(frozen=True)
class KernelMount:
    """The export mounted by the kernel's NFS client."""

    path: str
    command: str  # the mount command line, for the evidence


class NfsTransport:
    """Handles are NFSv3 file handles from MOUNT and LOOKUP; decoding is GETATTR, then READ
    of the marker (for a directory: LOOKUP of the marker file, then READ)."""

    nfs = True
    fh_size = NFS3_FHSIZE  # encode and decode speak NFSv3 (v4_handle: NFSv4's own 128)

    def __init__(self, name: str, mountpoint: Path, exporter: Exporter) -> None:
        self.name = name
        self.knfsd = exporter.knfsd
        self.subtree_check = exporter.subtree_check
        self.mountpoint = mountpoint
        self.exporter = exporter
        self.connection: int | None = None
        self.root_fh = b""
        self._client: Nfs3Client | None = None
        self._v4: Nfs4Client | None = None
        self._st_dev = 0

    def open(self) -> None:
        if self._client is not None:
            return
        self.exporter.start()
        try:
            self._st_dev = os.stat(self.mountpoint).st_dev
            mnt = Mount3Client(port=self.exporter.mount_port).mnt(self.exporter.mount_path)
            if not mnt.ok:
                raise OSError(errno.EACCES, f"MOUNT {self.exporter.mount_path}: {mnt.status}")
            self.root_fh = mnt.fh
            self._client = Nfs3Client(port=self.exporter.nfs_port)
        except BaseException:
            self.exporter.stop()
            raise

    def close(self) -> None:
        if self._v4 is not None:
            with contextlib.suppress(RpcError, OSError):
                self._v4.close()
            self._v4 = None
        if self._client is not None:
            self._client.close()
            self._client = None
            self.exporter.stop()

    @property
    def client(self) -> Nfs3Client:
        self.open()
        assert self._client is not None
        return self._client

    @property
    def v4(self) -> Nfs4Client:
        """An NFSv4.1 session to the same server, made on first use."""
        self.open()
        if self._v4 is None:
            self._v4 = Nfs4Client(port=self.exporter.nfs_port)
            self._v4.establish()
        return self._v4

    def v4_handle(self, path: Path) -> bytes:
        """PATH's NFSv4 handle, looked up by name from the pseudo-root."""
        res = self.v4.lookup_path(self.v4_path(path))
        if not res.ok or not res.fh:
            name = (res.failed or res).status.name
            raise OSError(_errno_of(name),
                          f"LOOKUP {self.v4_path(path)}: {name}")
        return res.fh

    def settle(self, *, purge: bool = False) -> None:
        """Before a decode (and, with PURGE, before drop_caches): the NFS server has done
        the closes it decided on, so what the decode meets does not depend on when one of
        its threads ran (exporters/nfsd_refs.py)."""
        pending = self.exporter.settle(purge=purge)
        if pending:
            raise OSError(errno.EBUSY, pending)

    def decode_v4(self, fh: bytes, is_dir: bool) -> Decoded:
        """Present an NFSv4 handle in one compound: PUTFH, GETFH, GETATTR and READ of the
        marker (in a directory, LOOKUP of it first). A server that answers GETFH with another
        handle than the one presented has not decoded it."""
        self.settle()
        ops = [nfs4.putfh(fh), nfs4.getfh(), nfs4.getattr(nfs4.Attr.TYPE, nfs4.Attr.FILEID)]
        if is_dir:
            ops.append(nfs4.lookup(MARKER_NAME))
        ops.append(nfs4.read(0, 4096))
        res = self.v4.compound(ops)
        bad = res.failed
        getfh = res.last(nfs4.Op.GETFH)
        if getfh is not None and getfh.ok and getfh.value != fh:
            return Decoded(error=f"GETFH after PUTFH gave another handle {getfh.value.hex()}")
        attrs = res.attrs
        if attrs is None:
            name = (bad or res).status.name
            return Decoded(error=name, errno=_errno_of(name))
        read = res.last(nfs4.Op.READ)
        marker = read.value.data.decode(errors="replace") if read and read.ok else None
        ident = Identity(st_ino=attrs["fileid"], st_dev=self._st_dev,
                         is_dir=attrs["type"] == FileType.DIR, marker=marker)
        why = None if marker is not None or bad is None else f"{bad.op.name}: {bad.status.name}"
        return Decoded(identity=ident, path=f"marker unreadable: {why}" if why else None)

    @contextlib.contextmanager
    def kernel_mount(self, version: str, under: Path,
                     options: Sequence[str] = ()) -> Iterator[KernelMount]:
        """The export mounted by the kernel's NFS client (only inside the knfsd VM: the host
        has none) in a new directory under UNDER: version "3" through MOUNT, "4.x" through
        the pseudo-root; unmounted (lazily) on exit."""
        from nfsconf.exporters.knfsd import nfs_mount_argv

        path = tempfile.mkdtemp(prefix="kclient-", dir=under)
        argv = nfs_mount_argv(version, self.exporter.mount_path,
                              self.v4_path(self.mountpoint), path, options)
        r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        command = " ".join(argv)
        if r.returncode != 0:  # the export refused its own client: a finding, not our error
            raise AssertionError(f"{command}: {r.stderr.strip()}")
        try:
            yield KernelMount(path, command)
        finally:
            subprocess.run(["umount", "-l", path], capture_output=True, timeout=60)

    def v4_path(self, path: Path) -> str:
        rel = os.path.relpath(path, self.mountpoint)
        base = self.exporter.v4_path.rstrip("/")
        return base if rel == "." else f"{base}/{rel}"

    def encode(self, path: Path, *, connectable: bool = False) -> Handle:
        if connectable:
            raise OSError(errno.EINVAL, "NFS has no connectable handles")
        rel = os.path.relpath(path, self.mountpoint)
        fh = self.root_fh if rel == "." else b""
        if rel != ".":
            self.open()
            res = self.client.lookup_path(self.root_fh, rel)
            if not res.ok:
                name = _status_name(res.status)
                raise OSError(_errno_of(name), f"LOOKUP {rel}: {name}")
            fh = res.fh
        return Handle(NFS_FH, fh)

    def decode(self, handle: Handle) -> Decoded:
        self.settle()
        try:
            attr = self.client.getattr(handle.data)
            if not attr.ok or attr.attr is None:
                return Decoded(error=_status_name(attr.status))
            is_dir = attr.attr.type == FileType.DIR
            fh = handle.data
            marker, why = None, None  # an unreadable marker leaves the identity unverified
            if is_dir:
                found = self.client.lookup(fh, MARKER_NAME)
                fh = found.fh if found.ok else b""
                if not found.ok:
                    why = f"LOOKUP {MARKER_NAME}: {_status_name(found.status)}"
            if fh:
                read = self.client.read(fh, 0, 4096)
                if read.ok:
                    marker = read.data.decode(errors="replace")
                else:
                    why = f"READ: {_status_name(read.status)}"
        except RpcRejected as e:  # the server refused the call at RPC level: an answer
            return Decoded(error=f"RPC: {e}")
        # anything else (a timeout, a dropped connection, bytes our client cannot parse) is
        # no answer about the handle: it propagates and the cell is an ERROR
        ident = Identity(st_ino=attr.attr.fileid, st_dev=self._st_dev, is_dir=is_dir,
                         marker=marker)
        return Decoded(identity=ident, path=f"marker unreadable: {why}" if why else None)


def make_transport(name: str, mountpoint: Path, *, fsid: int = 101,
                   knfsd: Knfsd | None = None) -> NfsTransport:
    """The NFS transport NAME over MOUNTPOINT; the knfsd ones are exported by KNFSD, the
    knfsd the guest of `nfsconf run --transport knfsd` started."""
    from nfsconf.exporters.ganesha import GaneshaExporter

    if name == "ganesha":
        return NfsTransport(name, mountpoint, GaneshaExporter(mountpoint))
    if name in ("knfsd", "knfsd-subtree"):
        if knfsd is None:
            raise RuntimeError(f"transport {name} needs the knfsd of an nfsconf guest "
                               f"(nfsconf run --transport knfsd starts one)")
        exporter = knfsd.exporter(mountpoint, fsid, subtree_check=name == "knfsd-subtree")
        return NfsTransport(name, mountpoint, exporter)
    raise ValueError(f"unknown NFS transport {name!r}")
