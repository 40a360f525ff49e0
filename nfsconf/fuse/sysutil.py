"""Thin ctypes wrappers for the syscalls Python's os module lacks, plus mount bookkeeping."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import resource  # here, not in raise_nofile_limit: spawner-forked servers inherit it
import struct

from nfsconf.mounttable import (  # noqa: F401 - re-exported for the server
    MountEntry,
    abort_connection,
    is_mountpoint,
    mounts,
    mounts_at,
)

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)

MS_NOSUID = 2
MS_NODEV = 4
MNT_FORCE = 1
MNT_DETACH = 2
AT_EMPTY_PATH = 0x1000
AT_SYMLINK_NOFOLLOW = 0x100
MAX_HANDLE_SZ = 128

_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                        ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.name_to_handle_at.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p,
                                    ctypes.POINTER(ctypes.c_int), ctypes.c_int]
_libc.open_by_handle_at.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
_libc.renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                            ctypes.c_uint]
_libc.fchownat.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint, ctypes.c_uint,
                           ctypes.c_int]

_FH_HEAD = struct.Struct("=Ii")  # struct file_handle: handle_bytes, handle_type
# pidfd_getfd(2) has no wrapper in Python; its number is the same on every architecture
_SYS_PIDFD_GETFD = 438


def _raise(what: str) -> None:
    err = ctypes.get_errno()
    raise OSError(err, f"{what}: {os.strerror(err)}")


def mount(source: str, target: str, fstype: str, flags: int, data: str) -> None:
    if _libc.mount(source.encode(), target.encode(), fstype.encode(), flags, data.encode()) != 0:
        _raise(f"mount {target}")


def umount2(target: str, flags: int = 0) -> None:
    if _libc.umount2(target.encode(), flags) != 0:
        _raise(f"umount2 {target}")


def name_to_handle_at(dirfd: int, name: bytes | str, flags: int = 0) -> tuple[int, bytes, int]:
    """(handle_type, handle bytes, mount_id) of ``name`` relative to ``dirfd``."""
    if isinstance(name, str):
        name = name.encode()
    buf = ctypes.create_string_buffer(_FH_HEAD.size + MAX_HANDLE_SZ)
    _FH_HEAD.pack_into(buf, 0, MAX_HANDLE_SZ, 0)
    mount_id = ctypes.c_int(0)
    if _libc.name_to_handle_at(dirfd, name, buf, ctypes.byref(mount_id), flags) != 0:
        _raise("name_to_handle_at")
    nbytes, htype = _FH_HEAD.unpack_from(buf, 0)
    return htype, buf.raw[_FH_HEAD.size:_FH_HEAD.size + nbytes], mount_id.value


def make_handle_buffer(handle_type: int, data: bytes) -> bytes:
    """A ``struct file_handle`` for open_by_handle_at. Plain bytes: the kernel only reads
    it, and ctypes passes a bytes object as a pointer without building a buffer."""
    return _FH_HEAD.pack(len(data), handle_type) + data


_open_by_handle_at = _libc.open_by_handle_at


def open_by_handle_at(mount_fd: int, handle: bytes, flags: int) -> int:
    fd = _open_by_handle_at(mount_fd, handle, flags)
    if fd < 0:
        _raise("open_by_handle_at")
    return fd


def renameat2(olddirfd: int, oldname: bytes, newdirfd: int, newname: bytes, flags: int) -> None:
    if _libc.renameat2(olddirfd, oldname, newdirfd, newname, flags) != 0:
        _raise("renameat2")


def fchown_empty(fd: int, uid: int, gid: int) -> None:
    """fchownat(fd, "", AT_EMPTY_PATH): chown what an O_PATH fd names, symlinks included."""
    if _libc.fchownat(fd, b"", uid & 0xFFFFFFFF, gid & 0xFFFFFFFF,
                      AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) != 0:
        _raise("fchownat")


def pidfd_getfd(pidfd: int, targetfd: int) -> int:
    """A duplicate (close-on-exec) of file descriptor TARGETFD of the process behind PIDFD:
    the same open file, as if that process had passed it over a unix socket."""
    fd = _libc.syscall(_SYS_PIDFD_GETFD, pidfd, targetfd, 0)
    if fd < 0:
        _raise(f"pidfd_getfd of fd {targetfd}")
    return int(fd)


# The mount table and fusectl have one implementation for the whole suite.
mountinfo = mounts


def raise_nofile_limit() -> int:
    """Raise RLIMIT_NOFILE's soft limit to the hard limit; return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return hard
    return soft
