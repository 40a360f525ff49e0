"""The environment record: which kernel, which FUSE protocol it speaks, which servers."""

from __future__ import annotations

import ctypes
import datetime
import functools
import os
import platform
import select
import struct
import tempfile
from pathlib import Path
from typing import Any

import nfsconf
from nfsconf.fuse.initflags import flag_names, lookup_handle_offer
from nfsconf.fuse.lookup_handle import FUSE_MAX_HANDLE_SZ
from nfsconf.mounttable import umount

FUSE_INIT = 26
_IN_HEADER = struct.Struct("<IIQQIIIHH")  # struct fuse_in_header, 40 bytes
_INIT_IN = struct.Struct("<IIIII")  # major, minor, max_readahead, flags, flags2

_libc = ctypes.CDLL(None, use_errno=True)


def probe_fuse_init(timeout: float = 5.0) -> dict[str, Any]:
    """Mount an empty FUSE filesystem for an instant and read the INIT request the kernel
    sends: the protocol version and every flag bit it offers. Nothing is answered; closing
    /dev/fuse ends the connection and the mount is detached."""
    fd = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
    mnt = tempfile.mkdtemp(prefix="nfsconf-probe-")
    try:
        opts = f"fd={fd},rootmode=40000,user_id=0,group_id=0".encode()
        if _libc.mount(b"nfsconf-probe", mnt.encode(), b"fuse.nfsconf-probe", 0, opts) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"mount fuse: {os.strerror(err)}")
        try:
            if not select.select([fd], [], [], timeout)[0]:
                raise TimeoutError("kernel sent no FUSE INIT")
            msg = os.read(fd, 1 << 17)
        finally:
            umount(mnt, lazy=True)
    finally:
        os.close(fd)
        os.rmdir(mnt)
    _, opcode, *_ = _IN_HEADER.unpack_from(msg)
    if opcode != FUSE_INIT:
        raise RuntimeError(f"first FUSE request was opcode {opcode}, not INIT")
    major, minor, _, flags, flags2 = _INIT_IN.unpack_from(msg, _IN_HEADER.size)
    # flags2 counts only when INIT_EXT is set (bit 30)
    bits = flags | (flags2 << 32 if flags >> 30 & 1 else 0)
    offer = lookup_handle_offer(minor, bits)
    return {"major": major, "minor": minor, "protocol": f"{major}.{minor}",
            "flag_bits": [b for b in range(64) if bits >> b & 1],
            # named by the kernel's own minor: bit 43 is one thing at 7.45, another at 7.46
            "flags": flag_names(bits, minor, offer.dialect),
            "lookup_handle": {"dialect": offer.dialect, "why": offer.why,
                              "max_handle_sz": FUSE_MAX_HANDLE_SZ if offer.dialect else None}}


@functools.cache
def _fuse_init() -> dict[str, Any]:
    """The INIT probe once per process: the env record and the LOOKUP_HANDLE gate share it
    (failures are not cached: each caller records its own)."""
    return probe_fuse_init()


@functools.cache
def kernel_offers(flag: str) -> tuple[bool, str]:
    """(offered, why) of a mainline FUSE INIT flag (abi.MAINLINE's names: HAS_RESEND, ...)
    on this kernel, probed once per process."""
    from nfsconf.fuse.initflags import MAINLINE

    bit, since = next((b, minor) for b, (name, minor) in MAINLINE.items() if name == flag)
    try:
        init = _fuse_init()
    except (OSError, RuntimeError, TimeoutError) as e:
        return False, f"FUSE INIT probe failed: {e}"
    if bit in init["flag_bits"]:
        return True, f"{flag} offered"
    return False, (f"kernel lacks FUSE {flag} (INIT bit {bit}, protocol 7.{since}; this "
                   f"kernel speaks {init['protocol']})")


@functools.cache
def kernel_lookup_handle() -> tuple[str | None, str]:
    """(dialect, why) of FUSE_LOOKUP_HANDLE as this kernel offers it in INIT, probed once per
    process: a scenario that needs it SKIPs before mounting anything where it is not."""
    try:
        offer = _fuse_init()["lookup_handle"]
    except (OSError, RuntimeError, TimeoutError) as e:
        return None, f"FUSE INIT probe failed: {e}"
    return offer["dialect"], offer["why"]


def environment_record(transport: str, profiles: dict[str, str]) -> dict[str, Any]:
    try:
        fuse: dict[str, Any] = dict(_fuse_init())
    except (OSError, RuntimeError, TimeoutError) as e:
        fuse = {"error": str(e)}
    return {
        "kind": "env",
        "nfsconf": nfsconf.__version__,
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "kernel": platform.release(),
        "kernel_version": platform.version(),
        "machine": platform.machine(),
        # parameters such as fuse.enable_uring=1 change what INIT offers
        "kernel_cmdline": _cmdline(),
        "fuse": fuse,
        "transport": transport,
        "profiles": profiles,
    }


def _cmdline() -> str | None:
    try:
        return Path("/proc/cmdline").read_text().strip()
    except OSError:
        return None
