"""Real kernel acquisition from Debian's archive, and a probe on a second kernel line.

Uses the machine's apt (system config for the default kernel, a private one for other
suites) and the shared cache, so only the first run downloads.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path

import pytest

from nfsconf.vm.kernels import default_cache_dir, read_image_release, resolve_kernel
from nfsconf.vm.runner import guest_python, run_in_vm

pytestmark = pytest.mark.vm


def tree_state(*roots: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime_ns) of every file under the roots: proves nothing there changed."""
    state = {}
    for root in roots:
        for dirpath, _dirs, files in os.walk(root):
            for f in files:
                p = Path(dirpath) / f
                try:
                    st = p.stat()
                except OSError:
                    continue
                state[str(p)] = (st.st_size, st.st_mtime_ns)
    return state


def test_default_kernel_is_debian_package_and_cached():
    cache = default_cache_dir()
    first = resolve_kernel(None, cache)
    entry = cache / "debian" / first.image.relative_to(cache / "debian").parts[0]
    before = entry.stat().st_mtime_ns, first.image.stat().st_mtime_ns
    again = resolve_kernel(None, cache)
    # the same cache entry, untouched: nothing was downloaded or unpacked again
    assert (entry.stat().st_mtime_ns, again.image.stat().st_mtime_ns) == before
    assert again == first
    assert first.source.startswith("debian ") and "linux-image-" in first.source
    assert read_image_release(first.image) == first.release
    assert hashlib.sha256(first.image.read_bytes()).hexdigest() == first.sha256
    moddir = first.modules_root / "lib/modules" / first.release
    assert (moddir / "modules.dep").is_file()
    assert list(moddir.rglob("nfsd.ko*")) and list(moddir.rglob("fuse.ko*"))
    entry = cache / "debian" / first.image.relative_to(cache / "debian").parts[0]
    assert json.loads((entry / "kernel.json").read_text())["sha256"] == first.sha256


@pytest.mark.slow
def test_other_suite_uses_a_private_apt_config():
    watched = [Path("/etc/apt"), Path("/var/lib/apt/lists"), Path("/var/cache/apt")]
    before = tree_state(*watched)
    bookworm = resolve_kernel(None, default_cache_dir())
    sid = resolve_kernel("debian:sid", default_cache_dir())
    assert tree_state(*watched) == before, "the system's apt state must stay untouched"
    assert sid.source.startswith("debian sid: linux-image-")
    assert sid.release != bookworm.release
    assert read_image_release(sid.image) == sid.release
    mods = sid.modules_root / "lib/modules" / sid.release
    assert list(mods.rglob("nfsd.ko*")), "sid splits image and modules; both must be fetched"


def test_unknown_suite_is_a_clear_error(tmp_path):
    from nfsconf.vm.kernels import KernelError

    with pytest.raises(KernelError, match="not found"):
        resolve_kernel("debian:nosuchsuite", tmp_path)


def test_probe_on_debian_sid_kernel(tmp_path):
    """A second kernel line, sid's, as User-Mode Linux: its package is linked against sid's
    glibc, newer than this host's, and runs on it all the same (in seccomp mode)."""
    # Debian's 7.x kernels lack legacy NFSv4 client tracking: this run needs nfsdcld.
    from nfsconf.vm.elfinterp import interp_of
    from nfsconf.vm.kernels import uml_help
    from nfsconf.vm.uml import UML

    kernel = resolve_kernel("uml:debian:sid", default_cache_dir())
    assert kernel.source.startswith("debian sid: user-mode-linux")
    assert Path(interp_of(kernel.image)).is_relative_to(default_cache_dir() / "debian")
    assert UML.fast_options(kernel) == ["seccomp=auto"] and "seccomp=" in uml_help(kernel.image)
    out = tmp_path / "probe.json"
    marker = uuid.uuid4().hex
    cmd = guest_python("tests.guest_probe", "probe", "--out", str(out), "--marker", marker)
    r = run_in_vm(kernel, cmd, timeout=300, rw_dirs=[tmp_path])
    res = json.loads(out.read_text())
    assert res["ok"], res.get("traceback")
    assert r.returncode == 0 and res["release"] == kernel.release
    assert res["grace_ended"] is True
    assert [c["content"] for c in res["clients"]] == [marker] * 3
    assert "Checking that seccomp filters can be installed...OK" in r.console
    print(f"\n[vm sid] {kernel.source}: boot {r.boot_seconds:.1f} s, total {r.duration:.1f} s")


def test_debian_uml_is_unpacked_into_the_cache_with_its_modules():
    cache = default_cache_dir()
    uml = resolve_kernel("uml:debian", cache)
    assert uml.arch == "um" and uml.image.name == "linux.uml"
    assert uml.image.is_relative_to(cache / "debian")  # downloaded, not the host's package
    again = resolve_kernel("uml:debian", cache)
    assert again == uml
    mods = uml.modules_root / "lib/modules" / uml.release
    assert (mods / "modules.dep").is_file() and list(mods.rglob("nfsd.ko*"))


def test_seccomp_mode_only_where_the_uml_kernel_has_it():
    """Debian's 6.1 UML has no seccomp= option (it came with 6.16): it boots in ptrace mode,
    with nothing on its command line it would not understand."""
    from nfsconf.vm.kernels import uml_help
    from nfsconf.vm.uml import UML

    uml = resolve_kernel("uml:debian", default_cache_dir())
    assert "seccomp=" not in uml_help(uml.image)
    assert UML.fast_options(uml) == []


def test_uml_tree_and_binary_specs(tmp_path):
    """A tree built with --arch um is found by its `linux` and its .config; the tree's
    release must be the binary's."""
    import shutil

    from nfsconf.errors import KernelError

    uml = resolve_kernel("uml:debian", default_cache_dir())
    tree = tmp_path / "tree"
    (tree / "include/config").mkdir(parents=True)
    shutil.copy2(uml.image, tree / "linux")
    (tree / ".config").write_text("CONFIG_UML=y\nCONFIG_HOSTFS=y\n")
    (tree / "include/config/kernel.release").write_text(uml.release + "\n")
    for spec in (tree, tree / "linux"):
        k = resolve_kernel(str(spec), tmp_path)
        assert (k.arch, k.tree, k.release, k.sha256) == ("um", tree, uml.release, uml.sha256)
        assert k.modules_root is None  # nothing installed in this tree: all built in
    (tree / "include/config/kernel.release").write_text("7.2.13-other\n")
    with pytest.raises(KernelError, match="rebuild"):
        resolve_kernel(str(tree), tmp_path)
    # a bare binary by path: its release from `linux --version`
    alone = tmp_path / "linux.uml"
    shutil.copy2(uml.image, alone)
    assert resolve_kernel(str(alone), tmp_path).arch == "um"


def test_bad_uml_specs_are_clear_errors(tmp_path):
    import shutil

    from nfsconf.errors import KernelError

    with pytest.raises(KernelError, match="uml:debian or uml:debian:SUITE"):
        resolve_kernel("uml:fedora", tmp_path)
    other = tmp_path / "true"  # an ELF program, but no kernel
    shutil.copy2(shutil.which("true"), other)
    with pytest.raises(KernelError, match="not a User-Mode Linux kernel that runs here"):
        resolve_kernel(str(other), tmp_path)
