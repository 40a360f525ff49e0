"""The guest's Python off 9p: the guest sees the host's root over 9p, uncached, where every
stat and open of an import is a round trip to the host (a second and more for each Python
process under TCG: pytest, every server of every lab, every holder). So the host packs the
directories the guest's Python reads — the standard library, this venv's site-packages and
the project's own packages — one tar each, cached by their content; the guest unpacks them
into its memory at boot and bind-mounts each copy over the original path. Every path stays
the same (tracebacks, __file__, the trace), only the reads get local.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shlex
import sys
import sysconfig
import tarfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]
# Top-level parts no guest process imports, left out of the packs (and so absent in the
# guest): the standard library's test suite, the interpreter's own site-packages (a venv
# does not read it), the static libpython (config-*), the GUI and the installers; the
# venv's installers and linter. Unpacking under TCG costs by the file.
STDLIB_SKIP = ("test", "site-packages", "dist-packages", "idlelib", "tkinter", "turtledemo",
               "ensurepip", "lib2to3", "distutils", "pydoc_data")
SITE_SKIP = ("pip", "setuptools", "pkg_resources", "ruff")


@dataclass(frozen=True)
class Pack:
    target: Path  # the directory the guest reads
    tar: Path  # its content, packed on the host


def _skipped(top: Path) -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    if top == Path(paths["stdlib"]).resolve():
        return STDLIB_SKIP
    return SITE_SKIP if top == Path(paths["purelib"]).resolve() else ()


def _left_out(name: str, skip: tuple[str, ...]) -> bool:
    return name in skip or (skip is STDLIB_SKIP and name.startswith("config-"))


def _wanted(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    # only the bytecode of the default optimization level is ever read
    return None if info.name.endswith((".opt-1.pyc", ".opt-2.pyc")) else info


def python_dirs() -> list[Path]:
    """What a guest Python process reads: the standard library, site-packages, and the
    project's packages (not the whole project: run directories may live below it)."""
    dirs = [Path(sysconfig.get_paths()["stdlib"]), Path(sysconfig.get_paths()["purelib"])]
    dirs += [PROJECT / name for name in ("nfsconf", "scenarios", "tests")]
    seen: list[Path] = []
    for d in dirs:
        d = d.resolve()
        if d.is_dir() and d not in seen:
            seen.append(d)
    return seen


def _listing(top: Path) -> list[tuple[str, os.stat_result]]:
    out = []
    skip = _skipped(top)
    for root, dirs, files in os.walk(top):
        if root == str(top):
            dirs[:] = [d for d in dirs if not _left_out(d, skip)]
        dirs.sort()
        for name in sorted(files):
            path = Path(root) / name
            try:
                out.append((str(path.relative_to(top)), path.lstat()))
            except OSError:
                continue
    return out


def content_key(top: Path) -> str:
    """Names, sizes and mtimes of everything below TOP: a changed file packs again."""
    h = hashlib.sha256(sys.version.encode())
    for rel, st in _listing(top):
        h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


# Earlier contents of a directory are removed only when no run has used them for this
# long: a run boots its VM again after every kernel crash and must find the tars it started
# with, whatever another run of changed code packed meanwhile.
STALE_AFTER = 2 * 86400.0


def pack_dir(top: Path, cache: Path) -> Path:
    """TOP as a tar in CACHE, made once per content (and touched on every use)."""
    key = content_key(top)
    tar = cache / f"{top.name}-{hashlib.sha256(str(top).encode()).hexdigest()[:8]}-{key}.tar"
    if tar.is_file():
        os.utime(tar)
        return tar
    cache.mkdir(parents=True, exist_ok=True)
    now = time.time()
    for old in cache.glob(f"{tar.name.rsplit('-', 1)[0]}-*.tar"):
        with contextlib.suppress(FileNotFoundError):
            if now - old.stat().st_mtime > STALE_AFTER:
                old.unlink()
    # the guests of one run pack from threads of one process: a PID alone is shared
    tmp = tar.with_suffix(f".tmp{os.getpid()}-{threading.get_ident()}")
    skip = _skipped(top)
    # records of 1 MiB: the guest reads the tar over 9p in as few round trips as it can
    with tarfile.open(tmp, "w", format=tarfile.GNU_FORMAT, bufsize=1 << 20) as t:
        t.add(top, arcname=".", recursive=False)
        for entry in sorted(os.listdir(top)):
            if not _left_out(entry, skip):
                t.add(top / entry, arcname=entry, recursive=True, filter=_wanted)
    os.replace(tmp, tar)
    return tar


def packs(cache: Path, keep_off: list[Path]) -> list[Pack]:
    """One pack per Python directory, except those holding a path in KEEP_OFF (a run
    directory the guest writes into must stay the host's)."""
    out = []
    for d in python_dirs():
        if any(p.resolve() == d or d in p.resolve().parents for p in keep_off):
            continue
        out.append(Pack(d, pack_dir(d, cache)))
    return out


def unpack_script(items: list[Pack]) -> str:
    """Shell lines the guest runs before its Python: each tar into memory, bound over its
    directory. A pack that fails to unpack leaves the 9p original in place."""
    lines = ['nfsconf_py=$(mktemp -d /tmp/nfsconf-py.XXXXXX)']
    for i, p in enumerate(items):
        d = f'"$nfsconf_py/{i}"'
        lines.append(f"mkdir {d} && tar -b 2048 -xf {shlex.quote(str(p.tar))} -C {d} && "
                     f"mount --bind {d} {shlex.quote(str(p.target))} || "
                     f"echo 'nfsconf: {p.target} stays on 9p' >&2")
    return "\n".join(lines)
