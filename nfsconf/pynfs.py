"""pynfs as a second oracle: the NFS test suite kernel and NFS-server developers already run,
run as itself against the same exports the scenarios use, its codes recorded as cells.

A user's pynfs checkout (or the unmodified tree the project vendors beside it) is copied
once into the cache and built there (`setup.py build`: it generates its XDR code with ply),
keyed by the tree's content. Then `testserver.py` of nfs4.0 and nfs4.1 runs against an
export; its own report gives each code's status (PASS, WARNING, FAILURE, OMIT,
UNSUPPORTED) and its JSON output the messages. Nothing of pynfs is copied into this
project: it runs as pynfs.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from nfsconf.errors import UsageError

VERSIONS = ("4.0", "4.1")
# The file-handle related flags of each suite: GETFH, PUTFH, LOOKUP, LOOKUPP, SAVEFH /
# RESTOREFH and the root/public handle codes — what the report puts beside nfsconf's own.
HANDLE_FLAGS = {
    "4.0": ("getfh", "putfh", "putrootfh", "putpubfh", "lookup", "lookupp", "savefh",
            "restorefh", "emptyfh"),
    "4.1": ("getfh", "putfh", "lookup", "lookupp", "emptyfh"),
}
# pynfs's statuses as nfsconf verdicts: WARNING is a pass ("there was a better way"),
# UNSUPPORTED and OMIT say the code could not apply to this server
VERDICT = {"PASS": "PASS", "WARNING": "PASS", "FAILURE": "FAIL", "OMIT": "SKIP",
           "UNSUPPORTED": "SKIP"}
_STATUS = re.compile(r"^(?P<code>\S+)\s+(?P<name>\S+)\s+:\s+(?P<status>PASS|WARNING|FAILURE|"
                     r"OMIT|UNSUPPORTED)\s*$")
_ASKED = re.compile(r"^Command line asked for (?P<n>\d+) of \d+ tests", re.M)
_BUILT = ".nfsconf-built"
# one suite's limit: the file-handle flags take 30-75 s in the TCG guest, `all` far longer
TIMEOUT = 3600.0


@dataclass(frozen=True)
class Code:
    version: str
    code: str  # PUTFH1r
    name: str  # st_putfh.testLink
    status: str  # pynfs's own word
    message: str

    @property
    def verdict(self) -> str:
        return VERDICT[self.status]


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "nfsconf" / "pynfs"


def tree_hash(src: Path) -> str:
    """The checkout's content, so an edited tree is built again."""
    h = hashlib.sha256()
    for path in sorted(p for p in src.rglob("*") if p.is_file() and ".git" not in p.parts):
        h.update(str(path.relative_to(src)).encode() + b"\0")
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def prepare(src: Path, cache: Path | None = None) -> Path:
    """A built copy of the pynfs checkout SRC; built once per content."""
    src = Path(src).expanduser().resolve()
    if not (src / "nfs4.1" / "testserver.py").is_file():
        raise UsageError(f"--pynfs {src}: not a pynfs checkout (no nfs4.1/testserver.py)")
    try:
        import ply  # noqa: F401  (pynfs's XDR generator needs it)
    except ImportError:
        raise UsageError("pynfs needs ply, a dependency of nfsconf: pip install ply") from None
    dest = (cache or cache_dir()) / tree_hash(src)
    if (dest / _BUILT).is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".build-", dir=dest.parent))
    try:
        shutil.copytree(src, work / "pynfs", symlinks=True, dirs_exist_ok=True)
        tree = work / "pynfs"
        _restore_links(tree)
        # its setup.py runs `python3 setup.py build` in each part: ours, with ply
        env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}"
                                    f"{os.environ.get('PATH', '')}")
        r = subprocess.run([sys.executable, "setup.py", "build"], cwd=tree, env=env,
                           capture_output=True, text=True, timeout=600)
        (tree / "build.log").write_text(r.stdout + r.stderr)
        broken = [v for v in VERSIONS if not _usable(tree, v)]
        if r.returncode != 0 or broken:
            raise UsageError(f"pynfs did not build (nfs{'/'.join(broken)}): "
                             f"{(r.stdout + r.stderr).strip().splitlines()[-1:]}; "
                             f"log: {tree / 'build.log'}")
        (tree / _BUILT).write_text(str(src) + "\n")
        if dest.exists():
            shutil.rmtree(dest)
        tree.rename(dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return dest


def _restore_links(tree: Path) -> None:
    """A checkout that lost its symlinks (copied without them) keeps each as a one-line text
    file naming its target: make those links again, so pynfs sees its own tree."""
    for path in list(tree.rglob("*")):
        if not path.is_file() or path.is_symlink() or path.stat().st_size > 200:
            continue
        target = path.read_text(errors="replace").strip()
        if "\n" in target or not target.startswith("."):
            continue
        if (path.parent / target).exists():
            path.unlink()
            path.symlink_to(target)


def _usable(tree: Path, version: str) -> bool:
    r = subprocess.run([sys.executable, f"nfs{version}/testserver.py", "--showflags"],
                       cwd=tree, capture_output=True, text=True, timeout=120)
    return r.returncode == 0 and "putfh" in r.stdout


def run(tree: Path, version: str, url: str, flags: list[str], out: Path,
        timeout: float = TIMEOUT) -> list[Code]:
    """testserver.py of VERSION against URL (host:port/path) with FLAGS; its codes."""
    if version not in VERSIONS:
        raise ValueError(f"pynfs version {version!r}")
    out.mkdir(parents=True, exist_ok=True)
    jfile = out / f"pynfs-{version}.json"
    # --rundeps: the codes a selected one depends on (MKDIR for LOOKP1) run too, where
    # pynfs would omit the selected one; --showomit: a code still omitted for a failed
    # dependency is a result too
    argv = [sys.executable, f"nfs{version}/testserver.py", url, "--maketree",
            f"--json={jfile}", "--showomit", "--rundeps", *flags]
    r = subprocess.run(argv, cwd=tree, capture_output=True, text=True, timeout=timeout)
    log = out / f"pynfs-{version}.log"
    log.write_text(" ".join(argv) + "\n\n" + r.stdout + r.stderr)
    if not jfile.is_file():
        raise RuntimeError(f"pynfs {version} ran no code (exit {r.returncode}): "
                           f"{_last_word(r.stdout + r.stderr)}; log: {log}")
    codes = parse(version, jfile.read_text(), r.stdout)
    asked = _ASKED.search(r.stdout)
    if asked is None:
        raise RuntimeError(f"pynfs {version} was interrupted (exit {r.returncode}); "
                           f"{len(codes)} codes reported; log: {log}")
    if int(asked["n"]) != len(codes):
        raise RuntimeError(f"pynfs {version} ran {asked['n']} codes, its report names "
                           f"{len(codes)}; log: {log}")
    return codes


def _last_word(output: str) -> str:
    """What pynfs said last: the exception of its traceback, or its last line."""
    lines = [x.strip() for x in output.splitlines() if x.strip()]
    said = [x for x in lines if not x.startswith(("File ", "INFO", "Traceback"))]
    return (said or lines or ["(no output)"])[-1][:300]


def parse(version: str, json_text: str, report: str) -> list[Code]:
    """The codes pynfs reported: its report (stdout) names each code it ran or omitted for a
    failed dependency with its status word, and the message on the indented lines below;
    its JSON output holds every code it knows, with the full failure message. Codes the
    flags did not select are in the JSON only, and are not results."""
    shown: dict[str, list[str]] = {}  # code -> [name, status, message lines...]
    current: list[str] | None = None
    for line in report.splitlines():
        m = _STATUS.match(line)
        if m:
            current = shown[m["code"]] = [m["name"], m["status"]]
        elif current is not None and line.startswith(" ") and line.strip():
            current.append(line.strip())
        else:
            current = None
    failures = {t["code"]: str((t.get("failure") or {}).get("message", ""))
                for t in json.loads(json_text).get("testcase", [])}
    out = []
    for code, (name, status, *lines) in shown.items():
        message = failures.get(code) or " ".join(lines)
        out.append(Code(version, code, name, status, " ".join(message.split())))
    return out
