"""Debian's apt, read-only: look packages up and download them, never install anything.

`system_apt()` uses the system's own configuration (its suite). `private_apt(suite)` points
a private configuration (its own sources.list, lists and cache under the suite's cache
directory) at the Debian mirror the system already uses, so another suite's packages can be
fetched without touching /etc/apt.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from nfsconf import process
from nfsconf.errors import AptError

_DEBIAN_KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
_LIST_MAX_AGE = 6 * 3600.0
# suites without -updates and -security pockets
_ROLLING = ("sid", "unstable", "experimental")




@dataclass(frozen=True)
class Apt:
    suite: str
    opts: tuple[str, ...]  # -o options selecting a private configuration; () = the system's

    def show(self, pkg: str) -> dict[str, str] | None:
        """The candidate version's fields (lower-case keys), or None when there is none."""
        proc = subprocess.run(["apt-cache", *self.opts, "show", "--no-all-versions", pkg],
                              capture_output=True, text=True)
        if proc.returncode != 0 or not proc.stdout.strip():
            if "No packages found" in proc.stderr or "Unable to locate" in proc.stderr:
                return None
            if not proc.stdout.strip():
                hint = " (run apt-get update?)" if not self.opts else ""
                raise AptError(f"apt-cache show {pkg} failed{hint}: {proc.stderr.strip()}")
        return deb822(proc.stdout.split("\n\n", 1)[0])

    def download(self, versions: list[str], dest: Path) -> list[Path]:
        """`apt-get download pkg=version ...` into DEST; returns the .deb files."""
        # The download runs as root into a root-owned dir; apt's _apt sandbox user could not
        # write there, so the sandbox is turned off for this one command.
        process.checked(["apt-get", *self.opts, "-o", "APT::Sandbox::User=root", "-q",
                         "download", *versions], cwd=dest, what="apt-get download",
                        error=AptError)
        return sorted(dest.glob("*.deb"))


def system_apt() -> Apt:
    return Apt(os_codename(), ())


def private_apt(suite: str, cache_dir: Path, etc: Path = Path("/etc/apt")) -> Apt:
    """An apt configuration of SUITE under CACHE_DIR/apt/SUITE, lists refreshed every 6 h."""
    if not re.fullmatch(r"[a-z][a-z0-9-]*", suite):
        raise AptError(f"bad Debian suite name {suite!r}")
    main_uri, security_uri, keyring = system_debian_uris(etc)
    base = cache_dir / "apt" / suite
    lists = base / "lists"
    cache = base / "cache"
    for d in (lists / "partial", cache / "archives" / "partial"):
        d.mkdir(parents=True, exist_ok=True)
    sources = base / "sources.list"
    text = "\n".join(sources_lines(suite, main_uri, security_uri, keyring)) + "\n"
    changed = not sources.is_file() or sources.read_text() != text
    sources.write_text(text)
    opts = (
        "-o", f"Dir::Etc::sourcelist={sources}",
        "-o", "Dir::Etc::sourceparts=-",
        "-o", f"Dir::State::Lists={lists}",
        "-o", f"Dir::Cache={cache}",
        "-o", "APT::Get::List-Cleanup=0",
        "-o", "APT::Sandbox::User=root",  # lists under a root-only cache dir
        # A mirror that serves a dated snapshot has Release files past their Valid-Until;
        # the signatures are still checked, only the freshness is not.
        "-o", "Acquire::Check-Valid-Until=false",
    )  # fmt: skip
    apt = Apt(suite, opts)
    stamp = base / "updated"
    fresh = stamp.is_file() and time.time() - stamp.stat().st_mtime < _LIST_MAX_AGE
    if changed or not fresh:
        proc = subprocess.run(["apt-get", *opts, "-q", "update"], capture_output=True,
                              text=True, stdin=subprocess.DEVNULL)
        out = (proc.stdout + proc.stderr).strip()
        if re.search(r"does not have a Release file|404\s+Not Found", out):
            raise AptError(f"Debian suite {suite!r} not found on {main_uri}:\n{out[-1500:]}")
        if proc.returncode != 0:
            raise AptError(f"apt-get update ({suite}) failed:\n{out[-2000:]}")
        stamp.touch()
    return apt


def sources_lines(suite: str, main_uri: str, security_uri: str | None,
                  keyring: Path) -> list[str]:
    """The sources.list of a private configuration for SUITE."""
    opt = f"[signed-by={keyring}]"
    lines = [f"deb {opt} {main_uri} {suite} main"]
    # sid and experimental have no -updates or -security; trixie-backports is a pocket of
    # its own, with nothing beside it (its kernel packages depend on nothing of trixie's
    # that the suite downloads)
    if suite not in _ROLLING and not suite.endswith("-backports"):
        lines.append(f"deb {opt} {main_uri} {suite}-updates main")
        if security_uri:
            lines.append(f"deb {opt} {security_uri} {suite}-security main")
    return lines


def os_codename() -> str:
    try:
        text = Path("/etc/os-release").read_text()
    except OSError:
        text = ""
    m = re.search(r"^VERSION_CODENAME=\"?([a-z]+)", text, re.M)
    return m.group(1) if m else "system"


def system_debian_uris(etc: Path = Path("/etc/apt")) -> tuple[str, str | None, Path]:
    """The Debian archive and security URIs (and keyring) the system's apt already uses."""
    entries = list(_system_sources(etc))
    main = next(
        (e for e in entries if any(not s.endswith("-security") for s in e[1]) and _is_debian(e)),
        None,
    )
    if main is None:
        raise AptError(
            f"no Debian mirror found in {etc}/sources.list or {etc}/sources.list.d/*.sources"
        )
    security = next((e for e in entries if any(s.endswith("-security") for s in e[1])), None)
    keyring = main[2] or _DEBIAN_KEYRING
    return main[0], security[0] if security else None, keyring


def _is_debian(entry: tuple[str, list[str], Path | None]) -> bool:
    uri, _suites, keyring = entry
    return uri.rstrip("/").endswith("/debian") or (
        keyring is not None and "debian-archive" in keyring.name
    )


def _system_sources(etc: Path) -> Iterator[tuple[str, list[str], Path | None]]:
    """(uri, suites, signed-by) of every enabled `deb` source of the system."""
    files = [etc / "sources.list"] + sorted((etc / "sources.list.d").glob("*.list"))
    for f in files:
        if not f.is_file():
            continue
        for line in f.read_text(errors="replace").splitlines():
            line = line.split("#", 1)[0].strip()
            m = re.match(r"deb\s+(?:\[([^\]]*)\]\s+)?(\S+)\s+(\S+)", line)
            if m:
                sb = re.search(r"signed-by=(\S+)", m.group(1) or "")
                yield m.group(2), [m.group(3)], Path(sb.group(1)) if sb else None
    for f in sorted((etc / "sources.list.d").glob("*.sources")):
        for stanza in re.split(r"\n\s*\n", f.read_text(errors="replace")):
            fields = deb822(stanza)
            if "deb" not in fields.get("types", "").split():
                continue
            if fields.get("enabled", "yes").lower() == "no":
                continue
            sb = fields.get("signed-by", "")
            keyring = Path(sb) if sb.startswith("/") else None
            for uri in fields.get("uris", "").split():
                yield uri, fields.get("suites", "").split(), keyring


def deb822(stanza: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    key = None
    for line in stanza.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        if line[0] in " \t" and key:
            fields[key] += "\n" + line.strip()
            continue
        if ":" in line:
            key, val = line.split(":", 1)
            key = key.strip().lower()
            fields[key] = val.strip()
    return fields


def depends(meta: dict[str, str]) -> list[str]:
    """Package names of Depends; for an alternative `a | b` the first is taken."""
    out = []
    for dep in meta.get("depends", "").replace("\n", " ").split(","):
        first = dep.split("|", 1)[0].strip()
        name = re.split(r"[\s(:]", first, maxsplit=1)[0]
        if name:
            out.append(name)
    return out
