"""Find the kernel to boot: a Debian package (downloaded and cached) or a user's build.

Specs understood by `resolve_kernel`:

- ``None``: Debian's current ``linux-image-amd64`` for this system's suite, through the
  system's own apt configuration (only ``apt-get download``, nothing is installed).
- ``debian:<suite>`` (bookworm, trixie, sid, ...): the same package from another suite,
  through a private apt configuration (own sources.list, lists and cache under the cache
  directory) pointing at the Debian mirror the system already uses.
- a path: a bzImage/vmlinuz with modules beside it (``<root>/lib/modules/<release>``), a
  directory holding such an image, or a built kernel tree (``arch/x86/boot/bzImage``).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

# Offsets in the x86 boot protocol header (Documentation/arch/x86/boot.rst).
_BOOT_FLAG_OFF = 0x1FE
_HDRS_OFF = 0x202
_VERSION_OFF = 0x206
_KERNEL_VERSION_PTR_OFF = 0x20E
_SETUP_BASE = 0x200

# Debian 13+ splits the kernel into linux-binary-* (image) and linux-modules-*; older
# suites ship both in linux-image-*. Every dependency with one of these prefixes is fetched.
_KERNEL_PKG_PREFIXES = ("linux-image-", "linux-binary-", "linux-modules-")
_DEBIAN_KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
_META = "kernel.json"
_LIST_MAX_AGE = 6 * 3600.0


class KernelError(Exception):
    """The kernel spec cannot be turned into a bootable kernel; the message says why."""


@dataclass(frozen=True)
class Kernel:
    image: Path  # bzImage / vmlinuz handed to qemu
    modules_root: Path | None  # holds lib/modules/<release> (or usr/lib/...); tree for trees
    release: str  # `uname -r` inside the guest
    sha256: str  # of the image: identifies the exact build in reports
    source: str  # human-readable provenance
    tree: Path | None = None  # set when booting a built kernel source tree

    @property
    def run_target(self) -> Path:
        """What to pass to `vng --run`: a tree lets vng prepare the tree's modules itself."""
        return self.tree if self.tree is not None else self.image

    def to_json(self) -> dict[str, str | None]:
        return {k: (str(v) if v is not None else None) for k, v in asdict(self).items()}


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "nfsconf" / "kernels"


def resolve_kernel(spec: str | None, cache_dir: Path) -> Kernel:
    """Turn a kernel spec into a Kernel ready to boot (downloading it if needed)."""
    cache_dir = Path(cache_dir)
    if spec is None or spec == "debian":
        return _debian_kernel(None, cache_dir)
    if spec.startswith("debian:"):
        suite = spec.split(":", 1)[1].strip()
        if not re.fullmatch(r"[a-z][a-z0-9-]*", suite):
            raise KernelError(f"bad Debian suite in kernel spec {spec!r}")
        return _debian_kernel(suite, cache_dir)
    return _path_kernel(Path(spec).expanduser())


# --- image header -------------------------------------------------------------------------


def read_image_release(image: Path) -> str:
    """Validate an x86 bzImage header and return the kernel release it embeds."""
    try:
        with open(image, "rb") as f:
            head = f.read(64 * 1024)
    except IsADirectoryError:
        raise KernelError(f"{image} is a directory, not a kernel image") from None
    except OSError as e:
        raise KernelError(f"cannot read kernel image {image}: {e.strerror}") from None
    if len(head) < 0x250 or head[_HDRS_OFF : _HDRS_OFF + 4] != b"HdrS":
        raise KernelError(
            f"{image} is not an x86 kernel image (no bzImage 'HdrS' boot header); "
            "give arch/x86/boot/bzImage or a vmlinuz, not vmlinux"
        )
    if head[_BOOT_FLAG_OFF : _BOOT_FLAG_OFF + 2] != b"\x55\xaa":
        raise KernelError(f"{image} has a boot header but no 0xAA55 boot flag: not bootable")
    proto = int.from_bytes(head[_VERSION_OFF : _VERSION_OFF + 2], "little")
    if proto < 0x0206:
        raise KernelError(f"{image}: boot protocol {proto:#x} is too old for qemu -kernel")
    ptr = int.from_bytes(head[_KERNEL_VERSION_PTR_OFF : _KERNEL_VERSION_PTR_OFF + 2], "little")
    start = _SETUP_BASE + ptr
    if ptr == 0 or start >= len(head):
        raise KernelError(f"{image}: boot header carries no kernel version string")
    text = head[start : start + 256].split(b"\0", 1)[0].decode("ascii", "replace")
    release = text.split(" ", 1)[0]
    if not release:
        raise KernelError(f"{image}: empty kernel version string in the boot header")
    return release


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# --- user-supplied kernels ----------------------------------------------------------------


def _path_kernel(path: Path) -> Kernel:
    path = path.resolve() if path.exists() else path
    if not path.exists():
        raise KernelError(f"kernel path {path} does not exist")
    if path.is_dir():
        if (path / "arch/x86/boot/bzImage").is_file():
            return _tree_kernel(path)
        if (path / "Makefile").is_file() and (path / "Kconfig").is_file():
            raise KernelError(
                f"{path} is a kernel tree that is not built (no arch/x86/boot/bzImage)"
            )
        images = _images_in_dir(path)
        if len(images) != 1:
            found = ", ".join(str(p) for p in images) or "none"
            raise KernelError(
                f"{path}: expected exactly one kernel image (bzImage, vmlinuz*, boot/vmlinuz-*), "
                f"found {found}"
            )
        path = images[0]
    if path.name == "bzImage" and path.parent.name == "boot" and path.parents[1].name == "x86":
        tree = path.parents[3]
        if (tree / ".config").is_file():
            return _tree_kernel(tree)
    release = read_image_release(path)
    root = _modules_root_for(path, release)
    if root is None:
        raise KernelError(
            f"no modules for {path} (release {release}): expected <dir>/lib/modules/{release} "
            "in a directory above the image (make modules_install INSTALL_MOD_PATH=<dir>), "
            "or pass the built kernel tree"
        )
    return Kernel(path, root, release, _sha256(path), f"image {path}")


def _images_in_dir(d: Path) -> list[Path]:
    names = ["bzImage", "vmlinuz"]
    found = [d / n for n in names if (d / n).is_file()]
    found += sorted(p for p in d.glob("vmlinuz-*") if p.is_file())
    found += sorted(p for p in d.glob("boot/vmlinuz-*") if p.is_file())
    found += sorted(p for p in d.glob("usr/lib/modules/*/vmlinuz") if p.is_file())
    return found


def _modules_root_for(image: Path, release: str) -> Path | None:
    """The nearest ancestor holding lib/modules/<release> (the place vng looks, too)."""
    for d in image.parents:
        if (d / "lib/modules" / release).is_dir():
            return d
        if (d / "usr/lib/modules" / release).is_dir():
            return d / "usr"
    return None


def _tree_kernel(tree: Path) -> Kernel:
    image = tree / "arch/x86/boot/bzImage"
    config = tree / ".config"
    if not config.is_file():
        raise KernelError(f"{tree}: built kernel tree without .config")
    release_file = tree / "include/config/kernel.release"
    release = read_image_release(image)
    if release_file.is_file():
        tree_release = release_file.read_text().strip()
        if tree_release and tree_release != release:
            raise KernelError(
                f"{tree}: bzImage is {release} but the tree is configured for {tree_release}; "
                "rebuild (make bzImage modules)"
            )
    modular = re.search(r"^CONFIG_MODULES=y$", config.read_text(errors="replace"), re.M)
    if modular and not (tree / "modules.order").is_file():
        raise KernelError(f"{tree}: CONFIG_MODULES=y but modules are not built (make modules)")
    return Kernel(image, tree, release, _sha256(image), f"tree {tree}", tree=tree)


# --- Debian packages ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Apt:
    suite: str
    opts: tuple[str, ...]  # -o options selecting a private configuration; () = the system's


def _debian_kernel(suite: str | None, cache_dir: Path) -> Kernel:
    cache_dir.mkdir(parents=True, exist_ok=True)
    with _locked(cache_dir / ".lock"):
        apt = _system_apt() if suite is None else _private_apt(suite, cache_dir)
        meta = _apt_show(apt, "linux-image-amd64")
        if meta is None:
            raise KernelError(f"package linux-image-amd64 not found in Debian {apt.suite}")
        image_pkg = next((d for d in _depends(meta) if d.startswith("linux-image-")), None)
        if image_pkg is None:
            raise KernelError(f"linux-image-amd64 in {apt.suite} depends on no linux-image-*")
        image_meta = _apt_show(apt, image_pkg)
        if image_meta is None:
            raise KernelError(f"package {image_pkg} (from linux-image-amd64) not found")
        version = image_meta["version"]
        key = f"{image_pkg}_{version}".replace(":", "%")
        dest = cache_dir / "debian" / key
        source = f"debian {apt.suite}: {image_pkg} {version}"
        cached = _load_cached(dest)
        if cached is not None:
            return cached
        pkgs = [image_pkg] + [
            d for d in _depends(image_meta) if d.startswith(_KERNEL_PKG_PREFIXES) and d != image_pkg
        ]
        return _download_and_unpack(apt, pkgs, dest, source)


def _load_cached(dest: Path) -> Kernel | None:
    meta_file = dest / _META
    if not meta_file.is_file():
        return None
    meta = json.loads(meta_file.read_text())
    image = Path(meta["image"])
    if not image.is_file() or _sha256(image) != meta["sha256"]:
        # A damaged cache entry is rebuilt, not trusted.
        shutil.rmtree(dest, ignore_errors=True)
        return None
    root = Path(meta["modules_root"]) if meta["modules_root"] else None
    return Kernel(image, root, meta["release"], meta["sha256"], meta["source"])


def _download_and_unpack(apt: _Apt, pkgs: list[str], dest: Path, source: str) -> Kernel:
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".unpack-", dir=dest.parent))
    try:
        debs = work / "debs"
        debs.mkdir()
        versions = []
        for pkg in pkgs:
            ver = _apt_show(apt, pkg)
            if ver is None:
                raise KernelError(f"package {pkg} not found in Debian {apt.suite}")
            versions.append(f"{pkg}={ver['version']}")
        # The download runs as root into a root-owned dir; apt's _apt sandbox user could not
        # write there, so the sandbox is turned off for this one command.
        _run(
            ["apt-get", *apt.opts, "-o", "APT::Sandbox::User=root", "-q", "download", *versions],
            cwd=debs,
            what="apt-get download",
        )
        root = work / "root"
        for deb in sorted(debs.glob("*.deb")):
            _run(["dpkg-deb", "-x", str(deb), str(root)], what=f"dpkg-deb -x {deb.name}")
        shutil.rmtree(debs)
        images = _images_in_dir(root)
        if not images:
            raise KernelError(f"{source}: the packages hold no vmlinuz")
        tmp_image = images[0]
        release = read_image_release(tmp_image)
        tmp_mods = _modules_root_for(tmp_image, release)
        if tmp_mods is None:
            raise KernelError(f"{source}: no lib/modules/{release} in the packages")
        # Generate modules.dep now, once, instead of letting every boot's vng do it.
        _run(["depmod", "-b", str(tmp_mods), release], what="depmod")
        work.rename(dest)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    image = dest / tmp_image.relative_to(work)
    mods = dest / tmp_mods.relative_to(work)
    kernel = Kernel(image, mods, release, _sha256(image), source)
    (dest / _META).write_text(json.dumps(kernel.to_json(), indent=1) + "\n")
    return kernel


def _system_apt() -> _Apt:
    return _Apt(_os_codename(), ())


def _private_apt(suite: str, cache_dir: Path, etc: Path = Path("/etc/apt")) -> _Apt:
    main_uri, security_uri, keyring = system_debian_uris(etc)
    base = cache_dir / "apt" / suite
    lists = base / "lists"
    cache = base / "cache"
    for d in (lists / "partial", cache / "archives" / "partial"):
        d.mkdir(parents=True, exist_ok=True)
    opt = f"[signed-by={keyring}]"
    lines = [f"deb {opt} {main_uri} {suite} main"]
    if suite not in ("sid", "unstable", "experimental"):
        lines.append(f"deb {opt} {main_uri} {suite}-updates main")
        if security_uri:
            lines.append(f"deb {opt} {security_uri} {suite}-security main")
    sources = base / "sources.list"
    text = "\n".join(lines) + "\n"
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
    apt = _Apt(suite, opts)
    stamp = base / "updated"
    fresh = stamp.is_file() and time.time() - stamp.stat().st_mtime < _LIST_MAX_AGE
    if changed or not fresh:
        proc = subprocess.run(
            ["apt-get", *opts, "-q", "update"],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
        )
        out = (proc.stdout + proc.stderr).strip()
        if re.search(r"does not have a Release file|404\s+Not Found", out):
            raise KernelError(f"Debian suite {suite!r} not found on {main_uri}:\n{out[-1500:]}")
        if proc.returncode != 0:
            raise KernelError(f"apt-get update ({suite}) failed:\n{out[-2000:]}")
        stamp.touch()
    return apt


def _os_codename() -> str:
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
        raise KernelError(
            f"no Debian mirror found in {etc}/sources.list or {etc}/sources.list.d/*.sources"
        )
    security = next((e for e in entries if any(s.endswith("-security") for s in e[1])), None)
    keyring = main[2] or _DEBIAN_KEYRING
    return main[0], security[0] if security else None, keyring


def _is_debian(entry: tuple[str, list[str], Path | None]) -> bool:
    uri, suites, keyring = entry
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
            fields = _deb822(stanza)
            if "deb" not in fields.get("types", "").split():
                continue
            if fields.get("enabled", "yes").lower() == "no":
                continue
            sb = fields.get("signed-by", "")
            keyring = Path(sb) if sb.startswith("/") else None
            for uri in fields.get("uris", "").split():
                yield uri, fields.get("suites", "").split(), keyring


def _deb822(stanza: str) -> dict[str, str]:
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


def _apt_show(apt: _Apt, pkg: str) -> dict[str, str] | None:
    proc = subprocess.run(
        ["apt-cache", *apt.opts, "show", "--no-all-versions", pkg],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0 or not proc.stdout.strip():
        if "No packages found" in proc.stderr or "Unable to locate" in proc.stderr:
            return None
        if not proc.stdout.strip():
            hint = " (run apt-get update?)" if not apt.opts else ""
            raise KernelError(f"apt-cache show {pkg} failed{hint}: {proc.stderr.strip()}")
    return _deb822(proc.stdout.split("\n\n", 1)[0])


def _depends(meta: dict[str, str]) -> list[str]:
    """Package names of Depends; for an alternative `a | b` the first is taken."""
    out = []
    for dep in meta.get("depends", "").replace("\n", " ").split(","):
        first = dep.split("|", 1)[0].strip()
        name = re.split(r"[\s(:]", first, maxsplit=1)[0]
        if name:
            out.append(name)
    return out


def _run(argv: list[str], *, what: str, cwd: Path | None = None) -> str:
    try:
        proc = subprocess.run(
            argv, cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL
        )
    except FileNotFoundError:
        raise KernelError(f"{what}: command {argv[0]!r} not found") from None
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise KernelError(f"{what} failed (exit {proc.returncode}):\n{out.strip()[-2000:]}")
    return out


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
