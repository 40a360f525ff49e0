"""Server profiles: how to mount one FUSE server over a source, and what it claims.

A profile never hides a failure: claims are only compared with what the scenarios measure.
Vendors write the same thing as a TOML file:

    name = "myfs"
    description = "my filesystem, default options"
    mount = "myfs -f {source} {mountpoint}"      # foreground; a string or a list
    source = "dir"                               # dir | overlay | squashfs | zip | tar
    writable = true
    package = "myfs"                             # Debian package, for the version record
    version = "myfs --version"                   # or a command printing the version
    [claims]
    export_support = true     # advertises FUSE_EXPORT_SUPPORT
    cold_decode = true        # handles survive a cache drop
    restart = false           # handles survive unmount + mount on the same source
    lookup_handle = false     # speaks FUSE_LOOKUP_HANDLE where the kernel offers it (fids
                              # 0x91/0x92); claimed, a 0x81 fid on such a kernel FAILs

    [restart]                 # optional: restart without unmount (certification level 4)
    handover = "myfs --takeover {work}/fd.sock --handover-from {pid} {source} {mountpoint}"
    takeover = "myfs --takeover {work}/fd.sock {source} {mountpoint}"

Placeholders: {source} (directory or image), {mountpoint}, {lower}/{upper}/{work} (overlay);
in the [restart] commands also {pid}, the process serving the mount now.
A relative command path with a slash ("./myfs", "bin/myfs") is the profile file's
directory's: a server shipped beside its profile runs from wherever nfsconf is started.

A restart by remount is an unmount and a mount with the same command on the same source (and
{work} directory). A restart without unmount needs the server's help, so it is declared:
each [restart] command starts the successor, in the foreground like `mount`, which serves
the same /dev/fuse connection (the server kept the fd alive somewhere, e.g. a process of its
own or systemd's fd store). `handover`: the successor asks {pid} to hand the connection over
and that process exits; `takeover`: nfsconf has SIGKILLed {pid} (only that process), the
successor takes the connection over. nfsconf trusts neither: it checks from the kernel that
the mount and its FUSE connection stayed, that the old process is gone, and that the
successor's processes are the ones answering (nfsconf/servers/inplace.py).
"""

from __future__ import annotations

import difflib
import shlex
import shutil
import subprocess
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from nfsconf.errors import ProfileError

SOURCE_KINDS = ("dir", "overlay", "squashfs", "zip", "tar")
PLACEHOLDERS = ("source", "mountpoint", "lower", "upper", "work")
RESTART_PLACEHOLDERS = (*PLACEHOLDERS, "pid")


@dataclass(frozen=True)
class Claims:
    export_support: bool = False
    cold_decode: bool = False
    restart: bool = False
    live_restart: bool = False
    lookup_handle: bool = False  # speaks FUSE_LOOKUP_HANDLE where the kernel offers it


@dataclass(frozen=True)
class Restart:
    """The profile's commands for a restart without unmount ([restart]); None: not declared."""

    handover: tuple[str, ...] | None = None  # graceful: the successor asks {pid} to leave
    takeover: tuple[str, ...] | None = None  # after nfsconf SIGKILLed {pid}


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    mount: tuple[str, ...]
    source: str = "dir"
    writable: bool = True
    package: str | None = None
    version: str | None = None
    claims: Claims = field(default_factory=Claims)
    origin: str = "builtin"
    mount_timeout: float = 15.0
    restart: Restart = field(default_factory=Restart)
    # knobs of the reference server (nfsconf/fuse) when this profile is one of its modes
    refserver: dict[str, str] | None = field(default=None, compare=False, hash=False)

    @property
    def binary(self) -> str:
        return self.mount[0]

    def installed(self) -> bool:
        return shutil.which(self.binary) is not None

    def argv(self, **values: str) -> list[str]:
        return [arg.format(**values) for arg in self.mount]

    def restart_argv(self, key: str, **values: str) -> list[str] | None:
        """The [restart] command KEY ("handover" or "takeover") with VALUES (the mount's
        placeholders and pid) filled in; None when the profile does not declare it."""
        command: tuple[str, ...] | None = getattr(self.restart, key)
        return None if command is None else [arg.format(**values) for arg in command]

    def server_version(self) -> str:
        """The version the server reports, for the environment record."""
        if self.refserver is not None:
            import nfsconf

            return f"nfsconf reference server {nfsconf.__version__}"
        try:
            if self.version:
                out = subprocess.run(shlex.split(self.version), capture_output=True, text=True,
                                     timeout=10)
                text = (out.stdout or out.stderr).strip().splitlines()
                return text[0] if text else "unknown"
            if self.package:
                out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", self.package],
                                     capture_output=True, text=True, timeout=10)
                return out.stdout.strip() or "not installed"
        except (OSError, subprocess.TimeoutExpired) as e:
            return f"unknown ({e})"
        return "unknown"


_TYPES: dict[str, type | tuple[type, ...]] = {
    "name": str, "description": str, "mount": (str, list), "source": str, "writable": bool,
    "package": str, "version": str, "claims": dict, "mount_timeout": (int, float),
    "restart": dict,
}
_TYPE_WORDS = {str: "a string", bool: "true or false", dict: "a table", list: "a list"}


def _expect(origin: str, key: str, value: Any, want: type | tuple[type, ...]) -> None:
    if isinstance(value, bool) and want in ((int, float),):
        ok = False
    else:
        ok = isinstance(value, want)
    if not ok:
        words = " or ".join(_TYPE_WORDS.get(t, t.__name__) for t in
                            (want if isinstance(want, tuple) else (want,)))
        raise ProfileError(f"{origin}: key '{key}': expected {words}, got {value!r}")


def _unknown(origin: str, key: str, known: set[str], prefix: str = "") -> ProfileError:
    """A typo's error: the key, the nearest known one, and all of them."""
    near = difflib.get_close_matches(key, sorted(known), n=1)
    hint = f"; did you mean '{prefix}{near[0]}'?" if near else ""
    return ProfileError(f"{origin}: unknown key '{prefix}{key}'{hint} (expected one of: "
                        f"{', '.join(sorted(known))})")


def profile_from_dict(data: dict[str, Any], origin: str, here: Path | None = None) -> Profile:
    """A profile from a TOML table; HERE, the directory of the profile file, is where a
    relative command path is looked up."""
    known = {f.name for f in fields(Profile)} - {"origin", "refserver"}
    for key, value in data.items():
        if key not in known:
            raise _unknown(origin, key, known)
        _expect(origin, key, value, _TYPES[key])
    for key in ("name", "mount"):
        if key not in data:
            raise ProfileError(f"{origin}: missing key '{key}'")
    argv = _command(origin, "mount", data["mount"], PLACEHOLDERS, here)
    if not any("{mountpoint}" in a for a in argv):
        raise ProfileError(f"{origin}: key 'mount': the command must contain {{mountpoint}}")
    source = data.get("source", "dir")
    if source not in SOURCE_KINDS:
        raise ProfileError(f"{origin}: key 'source': expected one of {', '.join(SOURCE_KINDS)},"
                           f" got {source!r}")
    claims_in = data.get("claims", {})
    claim_names = {f.name for f in fields(Claims)}
    for key, value in claims_in.items():
        if key not in claim_names:
            raise _unknown(origin, key, claim_names, "claims.")
        _expect(origin, f"claims.{key}", value, bool)
    values = {k: v for k, v in data.items() if k not in ("mount", "claims", "restart")}
    values.setdefault("description", values["name"])
    return Profile(mount=argv, claims=Claims(**claims_in), origin=origin,
                   restart=_restart(origin, data.get("restart", {}), here), **values)


def _command(origin: str, key: str, value: Any, placeholders: tuple[str, ...],
             here: Path | None) -> tuple[str, ...]:
    """A command line of key KEY (a string or a list), its placeholders checked, a relative
    program path with a slash taken from HERE."""
    argv = tuple(shlex.split(value) if isinstance(value, str) else value)
    if not argv or not all(isinstance(a, str) for a in argv):
        raise ProfileError(f"{origin}: key '{key}': expected a command line, got {value!r}")
    if here is not None and "/" in argv[0] and not Path(argv[0]).is_absolute():
        # beside the profile, not in whatever directory nfsconf (or its guest) started in
        argv = (str((here / argv[0]).resolve()), *argv[1:])
    for arg in argv:
        try:
            arg.format(**{p: "" for p in placeholders})
        except (KeyError, IndexError, ValueError) as e:
            raise ProfileError(f"{origin}: key '{key}': unknown placeholder in {arg!r} "
                               f"(expected {{{'}, {'.join(placeholders)}}})") from e
    return argv


def _restart(origin: str, table: dict[str, Any], here: Path | None) -> Restart:
    known = {f.name for f in fields(Restart)}
    commands: dict[str, tuple[str, ...]] = {}
    for key, value in table.items():
        if key not in known:
            raise _unknown(origin, key, known, "restart.")
        _expect(origin, f"restart.{key}", value, (str, list))
        commands[key] = _command(origin, f"restart.{key}", value, RESTART_PLACEHOLDERS, here)
    return Restart(**commands)


def load_profile_file(path: Path) -> Profile:
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise ProfileError(f"{path}: cannot read profile: {e.strerror}") from e
    except tomllib.TOMLDecodeError as e:
        raise ProfileError(f"{path}: not valid TOML: {e}") from e
    return profile_from_dict(data, str(path), path.parent)
