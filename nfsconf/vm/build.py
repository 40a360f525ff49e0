"""`nfsconf kernel build`: a Debian kernel source plus a patch series, built for the VM.

The source is Debian's `linux-source-X.Y` of a suite (fetched through the private apt
configuration, the system's sources untouched), the series a directory of `git
format-patch` files (in name order, or in the order of a quilt `series` file) or one mbox.
The configuration is `allnoconfig` plus what the guest needs (kconfig.GUEST) plus the
user's fragment. The built tree is cached under the key (source package and version,
series hash, config hash): a second build of the same thing is instant, an interrupted one
continues where make stopped.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nfsconf
from nfsconf import process
from nfsconf.errors import BuildError
from nfsconf.series import Patch, read_series, series_hash
from nfsconf.vm import kconfig
from nfsconf.vm.apt import Apt, AptError, depends, private_apt, system_apt
from nfsconf.vm.arch import TREE_MODULES, Arch, arch
from nfsconf.vm.kernels import locked

RECORD = "nfsconf-build.json"
_STAGE = ".nfsconf-stage"
LOCAL_VERSION = ".nfsconf-localversion"
# bump when the recipe changes what a tree with the same key would hold
_RECIPE = "1"
_PROGRESS_EVERY = 15.0
_STEP = re.compile(r"^\s+(CC \[M\]|LD \[M\]|CC|AS|LD|AR|HOSTCC|GEN|BTF)\s+(\S+)")
# Tools the build needs, with the Debian package of each.
BUILD_TOOLS = {"gcc": "build-essential", "make": "build-essential", "flex": "flex",
               "bison": "bison", "bc": "bc", "git": "git", "cpio": "cpio", "xz": "xz-utils",
               "dpkg-deb": "dpkg", "depmod": "kmod"}
BUILD_HEADERS = {"/usr/include/libelf.h": "libelf-dev", "/usr/include/openssl/ssl.h": "libssl-dev"}




@dataclass(frozen=True)
class BuildRequest:
    base: str = "debian:sid"  # debian | debian:SUITE
    series: tuple[Path, ...] = ()  # applied in this order (a series, then its fixes)
    config: Path | None = None
    jobs: int = os.cpu_count() or 1
    arch: str = "x86"  # x86 (a bzImage for qemu) | um (User-Mode Linux)


@dataclass(frozen=True)
class Built:
    tree: Path
    release: str
    cached: bool
    seconds: float
    record: dict[str, object]


def config_text(user: Path | None, target: Arch) -> str:
    text = target.config
    if user is not None:
        try:
            text += f"\n# --config {user}\n" + user.read_text()
        except OSError as e:
            raise BuildError(f"cannot read config fragment {user}: {e.strerror}") from None
    return text


def check_tools() -> list[str]:
    """What the host lacks to build a kernel, as install hints."""
    problems = [f"{t} missing: apt-get install {pkg}" for t, pkg in BUILD_TOOLS.items()
                if shutil.which(t) is None]
    problems += [f"{h} missing: apt-get install {pkg}" for h, pkg in BUILD_HEADERS.items()
                 if not Path(h).exists()]
    return problems


def build(req: BuildRequest, cache_dir: Path, say: Callable[[str], None] = print) -> Built:
    """Build (or find in the cache) the kernel REQ asks for; returns the tree."""
    problems = check_tools()
    if problems:
        raise BuildError("cannot build a kernel:\n  " + "\n  ".join(problems))
    target = arch(req.arch)
    patches = [p for s in req.series for p in read_series(s)]
    config = config_text(req.config, target)
    cache_dir.mkdir(parents=True, exist_ok=True)
    apt = apt_for(req.base, cache_dir)
    pkg, version = source_package(apt)
    s_hash = series_hash(patches)
    c_hash = config_hash(config)
    key = f"{pkg}_{version}-s{s_hash[:10]}-c{c_hash[:10]}".replace(":", "%")
    if target.name != "x86":  # x86 trees keep the keys they always had
        key += f"-{target.name}"
    tree = cache_dir / "build" / key
    (cache_dir / "build").mkdir(exist_ok=True)
    with locked(cache_dir / "build" / f".{key}.lock"):
        done = _cached(tree, target)
        if done is not None:
            say(f"kernel build: cached {tree}")
            if "patch_sha256" not in done.record:  # a tree built before the record had it
                done.record["patch_sha256"] = patch_digests(patches)
                (tree / RECORD).write_text(json.dumps(done.record, indent=1) + "\n")
            return done
        started = time.monotonic()
        stage = _stage(tree)
        if stage is None:
            shutil.rmtree(tree, ignore_errors=True)
            unpack(source_tarball(apt, pkg, version, cache_dir, say), tree, say)
            _set_stage(tree, "unpacked")
            stage = "unpacked"
        if stage == "unpacked":
            _apply(tree, patches, f"{pkg} {version}", say)
            _set_stage(tree, "patched")
            stage = "patched"
        if stage == "patched":
            configure(tree, config, s_hash, target, say)
            _set_stage(tree, "configured")
        say(f"kernel build: make ARCH={target.make_arch} -j{req.jobs} "
            f"{' '.join(target.targets)} in {tree} (log: build.log)")
        make(tree, target, target.targets, req.jobs, cache_dir, say)
        if target.install_modules:
            shutil.rmtree(tree / TREE_MODULES, ignore_errors=True)
            make(tree, target, ("modules_install", f"INSTALL_MOD_PATH={tree / TREE_MODULES}"),
                  1, cache_dir, say)
        release = (tree / "include/config/kernel.release").read_text().strip()
        seconds = time.monotonic() - started
        record: dict[str, object] = {
            "base": req.base, "arch": target.name, "source_package": pkg, "source_version": version,
            "series": [p.name for p in patches], "series_path": ", ".join(map(str, req.series)),
            "patch_sha256": patch_digests(patches),
            "series_sha256": s_hash, "config_sha256": c_hash,
            "config_fragment": str(req.config or ""), "release": release,
            "build_seconds": round(seconds, 1), "jobs": req.jobs,
            "nfsconf": nfsconf.__version__,
        }
        (tree / RECORD).write_text(json.dumps(record, indent=1) + "\n")
        (tree / _STAGE).unlink(missing_ok=True)
        say(f"kernel build: {release} built in {seconds / 60:.1f} min")
        return Built(tree, release, False, seconds, record)


def apt_for(base: str, cache_dir: Path) -> Apt:
    try:
        if base == "debian":
            return system_apt()
        if base.startswith("debian:"):
            return private_apt(base.split(":", 1)[1], cache_dir)
    except AptError as e:
        raise BuildError(str(e)) from None
    raise BuildError(f"--base {base!r}: give debian or debian:SUITE (bookworm, trixie, sid, ...)")


def source_package(apt: Apt) -> tuple[str, str]:
    try:
        meta = apt.show("linux-source")
        pkg = next((d for d in depends(meta or {}) if d.startswith("linux-source-")), None)
        if pkg is None:
            raise BuildError(f"Debian {apt.suite} has no linux-source-X.Y package")
        info = apt.show(pkg)
    except AptError as e:
        raise BuildError(str(e)) from None
    if info is None:
        raise BuildError(f"package {pkg} (from linux-source) not found in Debian {apt.suite}")
    return pkg, info["version"]


def source_tarball(apt: Apt, pkg: str, version: str, cache_dir: Path,
                    say: Callable[[str], None]) -> Path:
    """The upstream-plus-Debian source tarball of the package, downloaded once."""
    dest = cache_dir / "source" / f"{pkg}_{version}.tar.xz".replace(":", "%")
    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    say(f"kernel build: downloading {pkg} {version} (Debian {apt.suite})")
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".download-") as tmp:
        try:
            debs = apt.download([f"{pkg}={version}"], Path(tmp))
        except AptError as e:
            raise BuildError(str(e)) from None
        member = f"./usr/src/{pkg}.tar.xz"
        deb = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(debs[0])],
                               stdout=subprocess.PIPE)
        tar = subprocess.run(["tar", "-x", "-C", tmp, member], stdin=deb.stdout,
                             capture_output=True, text=True)
        assert deb.stdout is not None
        deb.stdout.close()
        if deb.wait() != 0 or tar.returncode != 0:
            raise BuildError(f"{debs[0].name} holds no {member}: {tar.stderr.strip()}")
        os.replace(Path(tmp) / member, dest)
    return dest


def unpack(tarball: Path, tree: Path, say: Callable[[str], None]) -> None:
    say(f"kernel build: unpacking {tarball.name}")
    tree.mkdir(parents=True)
    try:
        process.checked(["tar", "-xJf", str(tarball), "-C", str(tree), "--strip-components=1"],
                        what=f"unpacking {tarball.name}", error=BuildError)
    except BuildError:
        shutil.rmtree(tree, ignore_errors=True)
        raise


def patch_digests(patches: list[Patch]) -> list[str]:
    """Each patch's sha256, in order: the build record keeps them, so what the build applied
    can be named (KCIDB's patchset hash) wherever the series files are now."""
    return [hashlib.sha256(p.data).hexdigest() for p in patches]


def config_hash(config: str) -> str:
    return hashlib.sha256((_RECIPE + config).encode()).hexdigest()


def _apply(tree: Path, patches: list[Patch], base: str, say: Callable[[str], None]) -> None:
    for i, patch in enumerate(patches, 1):
        say(f"kernel build: applying {i}/{len(patches)} {patch.name}")
        why = apply_patch(tree, patch)
        if why is not None:
            shutil.rmtree(tree, ignore_errors=True)  # half-patched: never reused
            raise BuildError(f"patch {i}/{len(patches)} {patch.name} does not apply to "
                             f"{base}:\n{why}")


def apply_patch(tree: Path, patch: Patch, reverse: bool = False) -> str | None:
    """Apply PATCH to TREE (or take it out again); None, or why it does not apply (git
    apply's own words, every failed hunk named). A patch that does not apply changes
    nothing: git apply is all or nothing."""
    # git apply outside any repository acts on the files; it must not find a parent repo
    env = dict(os.environ, GIT_CEILING_DIRECTORIES=str(tree.parent))
    argv = ["git", "apply", "--whitespace=nowarn", "-p1", *(["-R"] if reverse else []), "-"]
    proc = subprocess.run(argv, input=patch.data, cwd=tree, env=env, capture_output=True)
    if proc.returncode == 0:
        return None
    return _apply_errors(proc.stderr.decode(errors="replace").strip())


def _apply_errors(text: str) -> str:
    """git apply's own words, with the file and line of every hunk that failed."""
    lines = [ln for ln in text.splitlines() if ln.startswith("error:")] or text.splitlines()
    return "\n".join(f"  {ln}" for ln in lines[:20])


def local_version(s_hash: str) -> str:
    """The release suffix of a build of the series S_HASH: a tree built by `kernel build`
    and a step of `kernel walk` over the same patches say the same release."""
    return "-nfsconf" + (f"-{s_hash[:8]}" if s_hash != series_hash([]) else "")


def configure(tree: Path, config: str, s_hash: str, target: Arch,
               say: Callable[[str], None]) -> None:
    say("kernel build: configuring (allnoconfig + the guest's needs)")
    set_local_version(tree, local_version(s_hash))
    wanted = kconfig.parse(config)
    # the release suffix is make's LOCALVERSION (make()), not CONFIG_LOCALVERSION: a config
    # symbol is in autoconf.h, which every object includes, so each series would defeat
    # ccache for the whole kernel; the variable reaches utsrelease.h alone
    fragment = config + '\nCONFIG_LOCALVERSION=""\n'
    frag = tree / ".nfsconf.config"
    frag.write_text(fragment)
    process.checked(["make", f"ARCH={target.make_arch}", f"KCONFIG_ALLCONFIG={frag}",
                     "allnoconfig"], cwd=tree, what="make allnoconfig", error=BuildError)
    final = kconfig.parse((tree / ".config").read_text())
    known = _kconfig_symbols(tree)
    dropped = kconfig.missing(wanted, final, known)
    if dropped:
        raise BuildError("the kernel configuration lost symbols it was asked for (a "
                         "dependency is not set; add it to the fragment):\n  "
                         + "\n  ".join(dropped))
    for sym in kconfig.unknown(wanted, known):
        say(f"kernel build: note: {sym} is not a symbol of this kernel; ignored")


def _kconfig_symbols(tree: Path) -> set[str]:
    syms: set[str] = set()
    pat = re.compile(r"^\s*(?:menu)?config\s+([A-Za-z0-9_]+)", re.M)
    for f in tree.rglob("Kconfig*"):
        try:
            syms.update(pat.findall(f.read_text(errors="replace")))
        except OSError:
            continue
    return syms


def set_local_version(tree: Path, local: str) -> None:
    """The release suffix every later make() of TREE passes as LOCALVERSION."""
    (tree / LOCAL_VERSION).write_text(local + "\n")


def make(tree: Path, target: Arch, goals: tuple[str, ...], jobs: int, cache_dir: Path,
          say: Callable[[str], None]) -> None:
    argv = ["make", f"ARCH={target.make_arch}", f"-j{jobs}", *goals]
    try:
        argv.append(f"LOCALVERSION={(tree / LOCAL_VERSION).read_text().strip()}")
    except OSError:
        pass  # a tree configured before the suffix moved here: its .config holds it
    env = dict(os.environ)
    if shutil.which("ccache"):  # a series that changes a few files rebuilds only those
        argv.append("CC=ccache gcc")
        env.update(CCACHE_DIR=str(cache_dir / "ccache"), CCACHE_BASEDIR=str(tree.parent),
                   CCACHE_NOHASHDIR="1", CCACHE_MAXSIZE="5G")
    # a fixed build stamp: the same sources give the same image
    env.update(KBUILD_BUILD_TIMESTAMP="nfsconf", KBUILD_BUILD_USER="nfsconf",
               KBUILD_BUILD_HOST="nfsconf")
    log = tree / "build.log"
    started = time.monotonic()
    steps, last, shown = 0, "", started
    with open(log, "a") as f:
        proc = subprocess.Popen(argv, cwd=tree, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, errors="replace",
                                start_new_session=True)
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                f.write(line)
                if m := _STEP.match(line):
                    steps += 1
                    last = m.group(2)
                now = time.monotonic()
                if now - shown >= _PROGRESS_EVERY:
                    shown = now
                    say(f"kernel build: {steps} steps, {_mmss(now - started)}, {last}")
            code = proc.wait()
        except BaseException:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait()
            raise
    if code != 0:
        raise BuildError(f"make failed (exit {code}) after {_mmss(time.monotonic() - started)}"
                         f":\n{_make_errors(log)}\nwhole log: {log}")


def _make_errors(log: Path) -> str:
    lines = log.read_text(errors="replace").splitlines()
    errors = [ln for ln in lines if "error:" in ln or re.search(r"\*\*\* \[", ln)]
    return "\n".join(f"  {ln}" for ln in (errors or lines[-15:])[:15])


def _mmss(seconds: float) -> str:
    return f"{int(seconds // 60)}:{int(seconds % 60):02d}"


def _stage(tree: Path) -> str | None:
    try:
        return (tree / _STAGE).read_text().strip() or None
    except OSError:
        return None


def _set_stage(tree: Path, stage: str) -> None:
    (tree / _STAGE).write_text(stage + "\n")


def _cached(tree: Path, target: Arch) -> Built | None:
    try:
        record = json.loads((tree / RECORD).read_text())
    except (OSError, ValueError):
        return None
    if not target.tree_image(tree).is_file() or (tree / _STAGE).exists():
        return None
    return Built(tree, str(record["release"]), True, 0.0, record)


def list_builds(cache_dir: Path) -> list[tuple[Path, dict[str, object]]]:
    out = []
    for d in sorted((cache_dir / "build").glob("*")):
        try:
            out.append((d, json.loads((d / RECORD).read_text())))
        except (OSError, ValueError):
            continue
    return out


def main_say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
