"""The kernels of `nfsconf kernel walk`: a base source with a series applied one patch at a
time, built after each patch, so the suite can say which patch changed which verdict.

One work tree per (source, config, arch) under CACHE/walk/ is configured once and patched
and rebuilt in place: make rebuilds only what a patch touched (ccache keeps the rest across
walks). After each build the bootable part — the image, its modules, .config and a build
record like `kernel build`'s — is copied to CACHE/walk/<key>/steps/<series hash>/, a kernel
`run --kernel` takes, so every step stays bootable after the tree has moved on and a second
walk over the same patches reuses them. A step's release is what `kernel build` of the same
patches would say (build.local_version).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import nfsconf
from nfsconf.errors import BuildError
from nfsconf.series import Patch, read_series, series_hash
from nfsconf.vm import build as kbuild
from nfsconf.vm.arch import TREE_MODULES, Arch, arch
from nfsconf.vm.kernels import locked

STATE = ".nfsconf-walk.json"  # in the work tree: the patches it holds now, in order
BASE = "(base)"


@dataclass(frozen=True)
class WalkRequest:
    base: str = "debian:sid"
    series: tuple[Path, ...] = ()  # applied in this order (a series, then its fixes)
    config: Path | None = None
    jobs: int = os.cpu_count() or 1
    arch: str = "x86"


@dataclass
class Step:
    number: int  # 0: the base alone; N: after the Nth patch
    patch: str  # the patch this step added (BASE for step 0)
    kernel: Path | None = None  # what `run --kernel` boots; None when it did not build
    release: str | None = None
    error: str | None = None  # "does not apply: ..." or "does not build: ..."
    build_seconds: float = 0.0
    cached: bool = False


def walk_kernels(req: WalkRequest, cache_dir: Path,
                 say: Callable[[str], None] = print) -> Iterator[Step]:
    """Each step's kernel, built (or found) in turn: the base, then after every patch. A
    patch that does not apply is a step with its error and stays out of the tree; one that
    does not build is a step with make's errors, and the walk goes on with it applied (the
    next patch may be the fix)."""
    problems = kbuild.check_tools()
    if problems:
        raise BuildError("cannot build a kernel:\n  " + "\n  ".join(problems))
    target = arch(req.arch)
    patches = [p for s in req.series for p in read_series(s)]
    if not patches:
        raise BuildError("kernel walk needs a series (--series DIR)")
    config = kbuild.config_text(req.config, target)
    cache_dir.mkdir(parents=True, exist_ok=True)
    apt = kbuild.apt_for(req.base, cache_dir)
    pkg, version = kbuild.source_package(apt)
    c_hash = kbuild.config_hash(config)
    home = cache_dir / "walk" / f"{pkg}_{version}-c{c_hash[:10]}-{target.name}".replace(":", "%")
    home.mkdir(parents=True, exist_ok=True)
    tree = home / "tree"
    record = {"base": req.base, "arch": target.name, "source_package": pkg,
              "source_version": version, "config_sha256": c_hash,
              "config_fragment": str(req.config or ""), "jobs": req.jobs}
    with locked(home / ".lock"):
        if not _to_base(tree, home):
            shutil.rmtree(tree, ignore_errors=True)
            kbuild.unpack(kbuild.source_tarball(apt, pkg, version, cache_dir, say), tree, say)
            _save(tree, home, [])
            kbuild.configure(tree, config, series_hash([]), target, say)
        held: list[Patch] = []
        yield _step(0, BASE, tree, home, held, target, record, req.jobs, cache_dir, say)
        for n, patch in enumerate(patches, 1):
            say(f"kernel walk: step {n}/{len(patches)}: {patch.name}")
            why = kbuild.apply_patch(tree, patch)
            if why is not None:
                yield Step(n, patch.name, error=f"does not apply:\n{why}")
                continue
            held.append(patch)
            _save(tree, home, held)
            yield _step(n, patch.name, tree, home, held, target, record, req.jobs, cache_dir,
                        say)


def _step(number: int, name: str, tree: Path, home: Path, held: list[Patch],
          target: Arch, record: dict[str, object], jobs: int, cache_dir: Path,
          say: Callable[[str], None]) -> Step:
    s_hash = series_hash(held)
    snap = home / "steps" / s_hash[:16]
    try:
        done = json.loads((snap / kbuild.RECORD).read_text())
        return Step(number, name, snap, str(done["release"]), cached=True)
    except (OSError, ValueError, KeyError):
        pass
    started = time.monotonic()
    kbuild.set_local_version(tree, kbuild.local_version(s_hash))
    try:
        kbuild.make(tree, target, target.targets, jobs, cache_dir, say)
        release = (tree / "include/config/kernel.release").read_text().strip()
        _snapshot(tree, snap, target, release, jobs, cache_dir, say)
    except BuildError as e:
        return Step(number, name, error=f"does not build: {e}",
                    build_seconds=time.monotonic() - started)
    seconds = time.monotonic() - started
    (snap / kbuild.RECORD).write_text(json.dumps({
        **record, "series": [p.name for p in held], "series_sha256": s_hash,
        "patch_sha256": kbuild.patch_digests(held),
        "walk_step": number, "release": release, "build_seconds": round(seconds, 1),
        "nfsconf": nfsconf.__version__}, indent=1) + "\n")
    say(f"kernel walk: step {number} {release} built in {seconds:.0f} s")
    return Step(number, name, snap, release, build_seconds=seconds)


def _snapshot(tree: Path, snap: Path, target: Arch, release: str, jobs: int, cache_dir: Path,
              say: Callable[[str], None]) -> None:
    """Copy what boots out of the tree: the image and .config (where `run --kernel` finds a
    UML tree's), the modules installed below it."""
    tmp = snap.with_name(snap.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    image = tmp / ("linux" if target.name == "um" else "bzImage")
    (tmp / "include/config").mkdir(parents=True)
    shutil.copy2(target.tree_image(tree), image)
    shutil.copy2(tree / ".config", tmp / ".config")
    (tmp / "include/config/kernel.release").write_text(release + "\n")
    # UML trees keep their modules in TREE_MODULES; an image's are found above it
    mods = tmp / TREE_MODULES if target.name == "um" else tmp
    kbuild.make(tree, target, ("modules_install", f"INSTALL_MOD_PATH={mods}"), 1, cache_dir,
                say)
    shutil.rmtree(snap, ignore_errors=True)
    tmp.rename(snap)


def _save(tree: Path, home: Path, held: list[Patch]) -> None:
    """Which patches the tree holds, each kept in HOME so the next walk can take it out."""
    store = home / "patches"
    store.mkdir(exist_ok=True)
    names = []
    for p in held:
        digest = series_hash([p])[:16]
        kept = store / f"{digest}.patch"
        if not kept.exists():  # named by its content: written once, whatever the walk
            kept.write_bytes(p.data)
        names.append({"name": p.name, "file": f"{digest}.patch"})
    (tree / STATE).write_text(json.dumps(names, indent=1) + "\n")


def _to_base(tree: Path, home: Path) -> bool:
    """Take the patches of the last walk out of the tree, last first; False when there is
    no configured tree or one of them does not come out (the tree is then made anew)."""
    if not (tree / ".config").is_file():
        return False
    try:
        held = json.loads((tree / STATE).read_text())
    except (OSError, ValueError):
        return False
    try:
        patches = [Patch(e["name"], (home / "patches" / e["file"]).read_bytes())
                   for e in held]
    except (OSError, KeyError, TypeError):
        return False
    while patches:
        if kbuild.apply_patch(tree, patches[-1], reverse=True) is not None:
            return False
        patches.pop()
        _save(tree, home, patches)
    return True
