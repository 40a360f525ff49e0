"""The local transport: the kernel's exportfs path through name_to_handle_at(2) and
open_by_handle_at(2) on the FUSE mount itself — the same encode_fh/fh_to_dentry code knfsd
calls, with no NFS server in between."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import os
import stat
import tempfile
from pathlib import Path

from nfsconf.mounttable import wait_idle
from nfsconf.transports.base import MARKER_NAME, Decoded, Handle, Identity

AT_FDCWD = -100
AT_HANDLE_CONNECTABLE = 0x002
AT_SYMLINK_NOFOLLOW = 0x100
MAX_HANDLE_SZ = 128

_libc = ctypes.CDLL(None, use_errno=True)


class _FileHandle(ctypes.Structure):
    _fields_ = [
        ("handle_bytes", ctypes.c_uint),
        ("handle_type", ctypes.c_int),
        ("f_handle", ctypes.c_ubyte * MAX_HANDLE_SZ),
    ]


_libc.name_to_handle_at.argtypes = [
    ctypes.c_int, ctypes.c_char_p, ctypes.POINTER(_FileHandle),
    ctypes.POINTER(ctypes.c_int), ctypes.c_int,
]
_libc.open_by_handle_at.argtypes = [ctypes.c_int, ctypes.POINTER(_FileHandle), ctypes.c_int]


def _raise_errno(what: str, path: str | os.PathLike[str] = "") -> None:
    err = ctypes.get_errno()
    raise OSError(err, f"{what}: {os.strerror(err)}", str(path) if path else None)


def handle_size(path: str | os.PathLike[str], *, connectable: bool = False) -> int:
    """Ask the kernel how many bytes the handle needs: a zero-sized buffer gets EOVERFLOW
    with handle_bytes set to the size (the documented size query)."""
    fh = _FileHandle(handle_bytes=0)
    mount_id = ctypes.c_int()
    flags = AT_HANDLE_CONNECTABLE if connectable else 0
    rc = _libc.name_to_handle_at(AT_FDCWD, os.fsencode(path), ctypes.byref(fh),
                                 ctypes.byref(mount_id), flags)
    if rc == 0:
        return 0  # a zero-length handle fits a zero-length buffer
    if ctypes.get_errno() != errno.EOVERFLOW:
        _raise_errno("name_to_handle_at size query", path)
    return fh.handle_bytes


def name_to_handle(path: str | os.PathLike[str], *, connectable: bool = False,
                   size: int = MAX_HANDLE_SZ) -> Handle:
    """Encode PATH; raises OSError (EOVERFLOW if SIZE is too small, EINVAL if the kernel
    does not know AT_HANDLE_CONNECTABLE, EOPNOTSUPP if the fs cannot export)."""
    fh = _FileHandle(handle_bytes=size)
    mount_id = ctypes.c_int()
    flags = AT_HANDLE_CONNECTABLE if connectable else 0
    rc = _libc.name_to_handle_at(AT_FDCWD, os.fsencode(path), ctypes.byref(fh),
                                 ctypes.byref(mount_id), flags)
    if rc != 0:
        _raise_errno("name_to_handle_at", path)
    data = bytes(fh.f_handle[: fh.handle_bytes])
    return Handle(fh_type=fh.handle_type, data=data, mount_id=mount_id.value)


@functools.cache
def connectable_supported() -> tuple[bool, str]:
    """Whether this kernel knows AT_HANDLE_CONNECTABLE (6.13+), asked once of a plain file
    of the suite's own tmpdir, so a FUSE server's error is never taken for the answer."""
    with tempfile.NamedTemporaryFile(prefix="nfsconf-probe-") as f:
        try:
            h = name_to_handle(f.name, connectable=True)
            return True, f"type 0x{h.fh_type:x} on {f.name}"
        except OSError as e:
            if e.errno == errno.EINVAL:
                return False, "name_to_handle_at rejects AT_HANDLE_CONNECTABLE (kernel < 6.13)"
            if e.errno == errno.EOPNOTSUPP:
                # the flag passed the kernel's check (unknown flags are EINVAL, asked before
                # the path); this tmpdir's fs has no fh_to_parent (tmpfs, as in the guest)
                return True, f"known; {f.name}'s filesystem cannot encode one (EOPNOTSUPP)"
            raise


def open_by_handle(mount_fd: int, handle: Handle, flags: int = os.O_RDONLY) -> int:
    """Decode HANDLE against the mount open at MOUNT_FD; returns an fd or raises OSError."""
    if len(handle.data) > MAX_HANDLE_SZ:
        raise OSError(errno.EINVAL, "handle longer than MAX_HANDLE_SZ")
    fh = _FileHandle(handle_bytes=len(handle.data), handle_type=handle.fh_type)
    ctypes.memmove(fh.f_handle, handle.data, len(handle.data))
    fd = _libc.open_by_handle_at(mount_fd, ctypes.byref(fh), flags | os.O_CLOEXEC)
    if fd < 0:
        _raise_errno("open_by_handle_at")
    return fd


def drop_caches(sync_fd: int | None = None) -> None:
    """Evict clean dentries and inodes so the next decode must ask the FUSE server. Only
    the filesystem of SYNC_FD is synced first: a global sync(2) could block on some other,
    hung FUSE mount of this machine."""
    if sync_fd is not None:
        _libc.syncfs(sync_fd)
    # One drop may only rotate a dentry used since the last one: its pass over the dentry
    # LRU clears DCACHE_REFERENCED and moves on (dcache.c dentry_lru_isolate), and it
    # passes again only while a pass frees more than one object (vmscan.c drop_slab). On a
    # quiet guest a pass can free less, and the file's dentry, and with it the FUSE inode,
    # stayed cached for every round after (a knfsd lab, 6 runs of 7 within 400 rounds).
    # The second drop (slab only) frees what the first only rotated.
    for what in ("3", "2"):
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write(what)


def fd_identity(fd: int) -> Identity:
    """What object FD really is: the inode the FUSE server reports and the marker the suite
    wrote into it at setup (read through the fd itself, never through a path)."""
    st = os.fstat(fd)
    is_dir = stat.S_ISDIR(st.st_mode)
    marker = None
    try:
        if is_dir:
            mfd = os.open(MARKER_NAME, os.O_RDONLY, dir_fd=fd)
            try:
                marker = os.read(mfd, 4096).decode(errors="replace")
            finally:
                os.close(mfd)
        else:
            marker = os.pread(fd, 4096, 0).decode(errors="replace")
    except OSError:
        marker = None  # unreadable: the identity stays unverified, it is not another object
    return Identity(st_ino=st.st_ino, st_dev=st.st_dev, is_dir=is_dir, marker=marker)


def fd_path(fd: int) -> str:
    """The path the kernel connected the decoded dentry to; "/" for a disconnected dentry.
    Evidence of reconnection only, never of identity."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return "?"


class LocalTransport:
    """Handles travel as raw exportfs fids on the FUSE mount."""

    name = "local"
    nfs = knfsd = subtree_check = False
    fh_size = MAX_HANDLE_SZ

    def __init__(self, mountpoint: Path) -> None:
        self.mountpoint = mountpoint
        self.connection: int | None = None  # the fusectl connection number, once mounted
        self._mount_fd: int | None = None

    def open(self) -> None:
        """Hold the mount's root open from the start: opening it later sends OPENDIR, which a
        hung server would never answer (O_PATH would avoid that, but open_by_handle_at
        refuses an O_PATH mount fd with EBADF)."""
        if self._mount_fd is None:
            self._mount_fd = os.open(self.mountpoint, os.O_RDONLY | os.O_DIRECTORY)

    def close(self) -> None:
        """Before an unmount: a held fd would make it EBUSY."""
        if self._mount_fd is not None:
            os.close(self._mount_fd)
            self._mount_fd = None

    def encode(self, path: Path, *, connectable: bool = False) -> Handle:
        return name_to_handle(path, connectable=connectable)

    def settle(self, *, purge: bool = False) -> None:
        """Nothing between the handle and the mount keeps files open."""

    def decode(self, handle: Handle) -> Decoded:
        try:
            self.open()
            assert self._mount_fd is not None
            fd = open_by_handle(self._mount_fd, handle)
        except OSError as e:  # ENOTCONN on the mount itself when the server died
            return Decoded(error=errno.errorcode.get(e.errno, str(e.errno)), errno=e.errno)
        try:
            return Decoded(identity=fd_identity(fd), path=fd_path(fd))
        finally:
            os.close(fd)

    def drop_caches(self) -> None:
        if self.connection is not None:
            busy = wait_idle(self.connection)
            if busy:  # an inode a request still holds would stay cached: no cold decode
                raise OSError(errno.EBUSY, f"drop_caches: {busy} FUSE request(s) still in "
                                           "flight after 2 s; the objects would stay cached")
        drop_caches(self._mount_fd)
        # Eviction queues FORGETs, which the kernel hands the server before other requests
        # (up to 16 ahead of each) and which get no answer; a few STATFS round trips (never
        # cached) come back only after the server read them. Whether it has also done what
        # they say, in the other threads of a multi-threaded server, only the server's
        # threads show: Lab.drop_caches waits until none of them is running.
        for _ in range(3):
            with contextlib.suppress(OSError):
                os.statvfs(self.mountpoint)
