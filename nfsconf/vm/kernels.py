"""Find the kernel to boot: a Debian package (downloaded and cached) or a user's build.

Specs understood by `resolve_kernel`:

- ``None``: Debian's current ``linux-image-amd64`` for this system's suite, through the
  system's own apt configuration (only ``apt-get download``, nothing is installed).
- ``debian:<suite>`` (bookworm, trixie, sid, ...): the same package from another suite,
  through a private apt configuration (own sources.list, lists and cache under the cache
  directory) pointing at the Debian mirror the system already uses.
- a path: a bzImage/vmlinuz with modules beside it (``<root>/lib/modules/<release>``), a
  directory holding such an image, or a built kernel tree (``arch/x86/boot/bzImage``).
- ``uml:debian`` / ``uml:debian:<suite>``: Debian's ``user-mode-linux`` package (a kernel
  built with ARCH=um, run as a host process) of this system's suite or another, unpacked
  into the cache like the bzImages.
- a path to a User-Mode Linux binary (``linux``, ``linux.uml``) or to a tree built with
  ``kernel build --arch um``.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from nfsconf import process
from nfsconf.errors import KernelError
from nfsconf.vm.apt import Apt, AptError, depends, private_apt, system_apt
from nfsconf.vm.arch import ARCHES, TREE_MODULES, arch_of_config
from nfsconf.vm.elfinterp import set_interp

# Offsets in the x86 boot protocol header (Documentation/arch/x86/boot.rst).
_BOOT_FLAG_OFF = 0x1FE
_HDRS_OFF = 0x202
_VERSION_OFF = 0x206
_KERNEL_VERSION_PTR_OFF = 0x20E
_SETUP_BASE = 0x200

# Debian 13+ splits the kernel into linux-binary-* (image) and linux-modules-*; older
# suites ship both in linux-image-*. Every dependency with one of these prefixes is fetched.
_KERNEL_PKG_PREFIXES = ("linux-image-", "linux-binary-", "linux-modules-")
_META = "kernel.json"




@dataclass(frozen=True)
class Kernel:
    image: Path  # bzImage / vmlinuz handed to qemu
    modules_root: Path | None  # holds lib/modules/<release> (or usr/lib/...); tree for trees
    release: str  # `uname -r` inside the guest
    sha256: str  # of the image: identifies the exact build in reports
    source: str  # human-readable provenance
    tree: Path | None = None  # set when booting a built kernel source tree
    arch: str = "x86"  # x86: a bzImage for qemu | um: a User-Mode Linux binary

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
    if spec is not None and spec.startswith("uml:"):
        rest = spec.removeprefix("uml:")
        if rest == "debian":
            return _debian_kernel(None, cache_dir, "um")
        if rest.startswith("debian:") and re.fullmatch(r"[a-z][a-z0-9-]*", rest[7:]):
            return _debian_kernel(rest[7:], cache_dir, "um")
        raise KernelError(f"bad kernel spec {spec!r}: uml:debian or uml:debian:SUITE "
                          "(a UML binary or tree is given by its path)")
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
        if (path / "linux").is_file() and (path / ".config").is_file():
            return _uml_tree_kernel(path)
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
    if is_elf(path):
        if path.name == "linux" and (path.parent / ".config").is_file():
            return _uml_tree_kernel(path.parent)
        release = uml_release(path)
        return Kernel(path, _modules_root_for(path, release), release, _sha256(path),
                      f"uml {path}", arch="um")
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
    return Kernel(image, tree, release, _sha256(image), _tree_source(tree), tree=tree)


def _tree_source(tree: Path) -> str:
    """What a tree is: `nfsconf kernel build` leaves its recipe in the tree."""
    try:
        rec = json.loads((tree / "nfsconf-build.json").read_text())
    except (OSError, ValueError):
        return f"tree {tree}"
    series = rec.get("series") or []
    patches = f" + {len(series)} patches ({str(rec.get('series_sha256', ''))[:8]})" \
        if series else ""
    return f"built {rec.get('source_package')} {rec.get('source_version')}{patches}, tree {tree}"


# --- User-Mode Linux ----------------------------------------------------------------------


def is_elf(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"\x7fELF"
    except OSError:
        return False


# Where `_download_and_unpack` puts the suite's own glibc for a UML package built against a
# newer one than the host's (sid's on Debian 12): the binary runs through that loader.
_PRIVATE_LIBC = "usr/lib/x86_64-linux-gnu"
_LOADER = "ld-linux-x86-64.so.2"


def uml_command(binary: Path) -> list[str]:
    """The argv that starts BINARY: itself, with its package's own glibc where it came with
    one (usr/bin/linux.uml beside usr/lib/...; its interpreter already points at that
    glibc's loader: `_runnable_uml`)."""
    libc = binary.parent.parent.parent / _PRIVATE_LIBC
    if (libc / _LOADER).is_file():
        return ["env", f"LD_LIBRARY_PATH={libc}", str(binary)]
    return [str(binary)]


def uml_release(binary: Path) -> str:
    """The release a User-Mode Linux binary reports (`linux --version`); it also proves the
    binary starts on this host (a UML of a newer Debian needs that suite's glibc)."""
    return _uml_output(binary, "--version", _stamp(binary)).split()[0]


def uml_help(binary: Path) -> str:
    """What a User-Mode Linux binary says its command-line options are (`linux --help`):
    which it has (seccomp= since 6.16) depends on the version and the build."""
    return _uml_output(binary, "--help", _stamp(binary))


def _stamp(path: Path) -> tuple[int, int]:
    try:
        st = path.stat()
    except OSError:
        return (0, 0)
    return (st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=32)
def _uml_output(binary: Path, option: str, stamp: tuple[int, int]) -> str:
    # a binary is checked once per process: a run boots it again after every crash, and
    # UML starts no faster than any other process
    if not is_elf(binary):
        raise KernelError(f"{binary} is not a User-Mode Linux binary (not an ELF file)")
    try:
        proc = subprocess.run([*uml_command(binary), option], capture_output=True, text=True,
                              timeout=30, stdin=subprocess.DEVNULL, start_new_session=True)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise KernelError(f"{binary} does not run as a User-Mode Linux kernel: {e}") from None
    words = proc.stdout.split()
    if proc.returncode != 0 or not words or (option == "--version" and len(words) != 1):
        why = (proc.stderr.strip() or proc.stdout.strip())[-300:]
        if "GLIBC_" in why:
            why += (" (it was built for a newer system: build that kernel here with "
                    "`nfsconf kernel build --arch um --base debian:SUITE`)")
        raise KernelError(f"{binary} is not a User-Mode Linux kernel that runs here "
                          f"(`{option}` exit {proc.returncode}): {why}")
    return proc.stdout


def _uml_tree_kernel(tree: Path) -> Kernel:
    image = tree / ARCHES["um"].image
    config = (tree / ".config").read_text(errors="replace")
    if arch_of_config(config).name != "um":
        raise KernelError(f"{tree}: holds a 'linux' binary but its .config is not ARCH=um")
    release = uml_release(image)
    release_file = tree / "include/config/kernel.release"
    if release_file.is_file() and release_file.read_text().strip() != release:
        raise KernelError(f"{tree}: linux is {release} but the tree is configured for "
                          f"{release_file.read_text().strip()}; rebuild")
    mods = tree / TREE_MODULES
    root = mods if (mods / "lib/modules" / release).is_dir() else None
    return Kernel(image, root, release, _sha256(image), _tree_source(tree), tree=tree,
                  arch="um")


def _uml_package(apt: Apt, cache_dir: Path) -> Kernel:
    meta = apt.show("user-mode-linux")
    if meta is None:
        raise KernelError(f"package user-mode-linux not found in Debian {apt.suite}")
    dest = cache_dir / "debian" / f"user-mode-linux_{meta['version']}".replace(":", "%")
    cached = _load_cached(dest)
    if cached is not None:
        return cached
    return _download_and_unpack(apt, ["user-mode-linux"], dest,
                                f"debian {apt.suite}: user-mode-linux {meta['version']}",
                                arch="um")


# --- Debian packages ----------------------------------------------------------------------


def _debian_kernel(suite: str | None, cache_dir: Path, arch: str = "x86") -> Kernel:
    """Debian's kernel of SUITE (None: this system's): linux-image-amd64 for x86,
    user-mode-linux for um."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    with locked(cache_dir / ".lock"):
        try:
            apt = system_apt() if suite is None else private_apt(suite, cache_dir)
            if arch == "um":
                return _uml_package(apt, cache_dir)
            return _debian_image(apt, cache_dir)
        except AptError as e:
            raise KernelError(str(e)) from None


def _debian_image(apt: Apt, cache_dir: Path) -> Kernel:
    meta = apt.show("linux-image-amd64")
    if meta is None:
        raise KernelError(f"package linux-image-amd64 not found in Debian {apt.suite}")
    image_pkg = next((d for d in depends(meta) if d.startswith("linux-image-")), None)
    if image_pkg is None:
        raise KernelError(f"linux-image-amd64 in {apt.suite} depends on no linux-image-*")
    image_meta = apt.show(image_pkg)
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
        d for d in depends(image_meta) if d.startswith(_KERNEL_PKG_PREFIXES) and d != image_pkg
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
    return Kernel(image, root, meta["release"], meta["sha256"], meta["source"],
                  arch=meta.get("arch") or "x86")


def _download_and_unpack(apt: Apt, pkgs: list[str], dest: Path, source: str,
                         arch: str = "x86") -> Kernel:
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".unpack-", dir=dest.parent))
    try:
        root = work / "root"
        _unpack(apt, pkgs, root, work / "debs")
        if arch == "um":
            tmp_image = root / "usr/bin/linux.uml"
            if not tmp_image.is_file():
                raise KernelError(f"{source}: the package holds no usr/bin/linux.uml")
            release = _runnable_uml(apt, tmp_image, root, dest / "root")
            # the package keeps its modules in usr/lib/uml/modules; modprobe -d wants
            # lib/modules/<release> below the directory it is given
            (root / "lib").mkdir(exist_ok=True)
            (root / "lib/modules").symlink_to("../usr/lib/uml/modules")
        else:
            images = _images_in_dir(root)
            if not images:
                raise KernelError(f"{source}: the packages hold no vmlinuz")
            tmp_image = images[0]
            release = read_image_release(tmp_image)
        tmp_mods = _modules_root_for(tmp_image, release)
        if tmp_mods is None:
            raise KernelError(f"{source}: no lib/modules/{release} in the packages")
        # Generate modules.dep now, once, instead of letting every boot's vng do it.
        process.checked(["depmod", "-b", str(tmp_mods), release], what="depmod",
                        error=KernelError)
        work.rename(dest)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    image = dest / tmp_image.relative_to(work)
    mods = dest / tmp_mods.relative_to(work)
    kernel = Kernel(image, mods, release, _sha256(image), source, arch=arch)
    (dest / _META).write_text(json.dumps(kernel.to_json(), indent=1) + "\n")
    return kernel


def _unpack(apt: Apt, pkgs: list[str], root: Path, debs: Path) -> None:
    """The current version of each of PKGS, downloaded into DEBS (removed after) and
    unpacked into ROOT."""
    versions = []
    for pkg in pkgs:
        ver = apt.show(pkg)
        if ver is None:
            raise KernelError(f"package {pkg} not found in Debian {apt.suite}")
        versions.append(f"{pkg}={ver['version']}")
    debs.mkdir()
    for deb in apt.download(versions, debs):
        process.checked(["dpkg-deb", "-x", str(deb), str(root)],
                        what=f"dpkg-deb -x {deb.name}", error=KernelError)
    shutil.rmtree(debs)


def _runnable_uml(apt: Apt, image: Path, root: Path, final_root: Path) -> str:
    """The release of the package's UML binary. One built against a newer glibc than the
    host's (sid's 7.2um on Debian 12) gets its suite's libc6 unpacked beside it, and its
    program interpreter pointed at that glibc's loader: here first, to prove it runs, then
    where FINAL_ROOT will be."""
    try:
        return uml_release(image)
    except KernelError as e:
        if "GLIBC_" not in str(e):
            raise
    _unpack(apt, ["libc6"], root, root.parent / "libc")
    set_interp(image, str(root / _PRIVATE_LIBC / _LOADER))
    release = uml_release(image)
    set_interp(image, str(final_root / _PRIVATE_LIBC / _LOADER))
    return release


@contextmanager
def locked(path: Path) -> Iterator[None]:
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
