"""Which kernel image a run ran on, beyond its release string: two builds of one tree share
the release, and a regression report must tell them apart."""

from __future__ import annotations

import hashlib
import os
import platform
import struct
from pathlib import Path
from typing import Any

NOTES = Path("/sys/kernel/notes")
NT_GNU_BUILD_ID = 3


def build_id(notes: bytes) -> str | None:
    """The GNU build-id in an ELF note section (the running kernel's /sys/kernel/notes)."""
    off = 0
    while off + 12 <= len(notes):
        namesz, descsz, ntype = struct.unpack_from("<III", notes, off)
        name_at = off + 12
        desc_at = name_at + (namesz + 3) // 4 * 4
        end = desc_at + (descsz + 3) // 4 * 4
        if end > len(notes):
            return None
        if ntype == NT_GNU_BUILD_ID and notes[name_at:name_at + namesz].rstrip(b"\0") == b"GNU":
            return notes[desc_at:desc_at + descsz].hex()
        off = end
    return None


def kernel_image(image: Path | None = None) -> dict[str, Any]:
    """The identity of the kernel under test: the running kernel's build-id and, when the
    image file is known (given, or /boot/vmlinuz-<release>), its sha256."""
    # the engine that ran it: "host" (this machine's kernel), "qemu" (a bzImage under TCG)
    # or "uml" (User-Mode Linux): one kernel line on two engines is two kernels to compare
    out: dict[str, Any] = {"build_id": None, "path": None, "sha256": None,
                           "engine": os.environ.get("NFSCONF_KERNEL_ENGINE", "host")}
    try:
        out["build_id"] = build_id(NOTES.read_bytes())
    except OSError:
        pass
    # in the knfsd guest the host names the image it booted (the guest sees the host's root)
    named = os.environ.get("NFSCONF_KERNEL_IMAGE")
    path = image or (Path(named) if named else Path(f"/boot/vmlinuz-{platform.release()}"))
    known = os.environ.get("NFSCONF_KERNEL_SHA256")  # hashed by the host: seconds under TCG
    if image is None and named and known:
        out.update(path=named, sha256=known)
        return out
    try:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
        out.update(path=str(path), sha256=digest.hexdigest())
    except OSError:
        pass
    return out
