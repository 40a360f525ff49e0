"""Built-in profiles: the Debian-packaged FUSE servers, run in the foreground.

Claims are what each server promises (advertised export support) or what its options are
meant to give (noforget keeps nodeids alive), never what the suite measured: the matrix
checks them."""

from __future__ import annotations

import sys
from pathlib import Path

from nfsconf.servers.profile import Claims, Profile, ProfileError, load_profile_file

BUILTIN: tuple[Profile, ...] = (
    Profile("bindfs", "bindfs, default options", ("bindfs", "-f", "{source}", "{mountpoint}"),
            package="bindfs", claims=Claims(export_support=True)),
    Profile("bindfs-noforget", "bindfs -o noforget (libfuse keeps every node)",
            ("bindfs", "-f", "-o", "noforget", "{source}", "{mountpoint}"),
            package="bindfs", claims=Claims(export_support=True, cold_decode=True)),
    Profile("fuse-overlayfs", "fuse-overlayfs, lower = seed tree, empty upper",
            ("fuse-overlayfs", "-f", "-o", "lowerdir={lower},upperdir={upper},workdir={work}",
             "{mountpoint}"), source="overlay", package="fuse-overlayfs"),
    Profile("squashfuse", "squashfuse over a squashfs image of the seed tree",
            ("squashfuse", "-f", "{source}", "{mountpoint}"), source="squashfs",
            writable=False, package="squashfuse"),
    Profile("unionfs-fuse", "unionfs-fuse, one read-write branch",
            ("unionfs", "-f", "-o", "cow", "{source}=RW", "{mountpoint}"),
            package="unionfs-fuse"),
    Profile("mergerfs", "mergerfs, default options", ("mergerfs", "-f", "{source}", "{mountpoint}"),
            package="mergerfs"),
    Profile("mergerfs-noforget", "mergerfs -o noforget,inodecalc=path-hash",
            ("mergerfs", "-f", "-o", "noforget,inodecalc=path-hash", "{source}", "{mountpoint}"),
            package="mergerfs", claims=Claims(export_support=True, cold_decode=True)),
    Profile("fuse-zip", "fuse-zip over a zip archive of the seed tree",
            ("fuse-zip", "-f", "{source}", "{mountpoint}"), source="zip", package="fuse-zip"),
    Profile("archivemount", "archivemount over a tar archive of the seed tree",
            ("archivemount", "-f", "{source}", "{mountpoint}"), source="tar",
            package="archivemount"),
    Profile("rclone", "rclone mount, local backend, --vfs-cache-mode writes",
            ("rclone", "mount", "--config", "/dev/null", "--cache-dir", "{work}",
             "--vfs-cache-mode", "writes", "{source}", "{mountpoint}"),
            package="rclone"),
)



def _ref(name: str, description: str, claims: Claims, **knobs: str) -> Profile:
    argv = (sys.executable, "-m", "nfsconf.fuse", "{source}", "{mountpoint}",
            *(f"--{k.replace('_', '-')}={v}" for k, v in knobs.items()))
    return Profile(name, description, argv, package=None, claims=claims, refserver=knobs)


# The reference server (nfsconf/fuse) in its modes: every behaviour a knob, every request
# in its trace.
# All but the ref-lh ones decline LOOKUP_HANDLE: on a kernel with the series they are the
# classic 0x81 servers, so the same kernel is tested both ways.
REFERENCE: tuple[Profile, ...] = (
    _ref("ref-stable", "reference server, nodeids from the backing file's handle",
         Claims(export_support=True, cold_decode=True, restart=True, live_restart=True),
         nodeid="stable", lookup_handle="off"),
    _ref("ref-volatile", "reference server, nodeids from a counter, reused, generation 0",
         Claims(export_support=True), nodeid="volatile", generation="zero",
         lookup_handle="off"),
    _ref("ref-volatile-bump", "reference server, counter nodeids, generation bumped on reuse",
         Claims(export_support=True), nodeid="volatile", generation="bump",
         lookup_handle="off"),
    _ref("ref-noexport", "reference server, stable nodeids, FUSE_EXPORT_SUPPORT off",
         Claims(), nodeid="stable", export="off", lookup_handle="off"),
    _ref("ref-lh", "reference server speaking LOOKUP_HANDLE where the kernel offers it; "
                   "handles and nodeids from the backing file's handle",
         Claims(export_support=True, cold_decode=True, restart=True, live_restart=True,
                lookup_handle=True),
         nodeid="stable", lookup_handle="auto"),
    _ref("ref-lh-handles", "reference server speaking LOOKUP_HANDLE; counter nodeids, "
                           "handles from the backing file: only the handle outlives a "
                           "remount (the nodeids of a live connection are journaled, so a "
                           "successor after SIGKILL still serves them)",
         Claims(export_support=True, lookup_handle=True), nodeid="volatile",
         generation="bump", lookup_handle="auto", journal="on"),
    _ref("ref-lh-volatile", "reference server speaking LOOKUP_HANDLE; counter nodeids and "
                            "handles salted per server instance: nothing survives a restart",
         Claims(export_support=True, lookup_handle=True), nodeid="volatile",
         generation="zero", lookup_handle="auto", handle_salt="instance"),
)
BUILTIN = BUILTIN + REFERENCE
_BY_NAME = {p.name: p for p in BUILTIN}


def find_profile(spec: str) -> Profile:
    """A built-in name, or the path of a TOML profile file."""
    if spec in _BY_NAME:
        return _BY_NAME[spec]
    if spec.endswith(".toml") or "/" in spec:
        path = Path(spec)
        if not path.exists():
            raise ProfileError(f"{spec}: no such profile file")
        return load_profile_file(path)
    raise ProfileError(f"no such profile '{spec}' (built-in: {', '.join(_BY_NAME)}; "
                       "or give the path of a .toml profile)")


def installed_builtins() -> list[Profile]:
    return [p for p in BUILTIN if p.installed()]
