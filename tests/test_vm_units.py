"""Pure-code parts of nfsconf.vm: no VM, no network.

Inputs are built from the specs the code reads (x86 boot protocol, fs/nfs/export.c,
fs/nfsd/nfsfh.h, apt source formats), not from the code's own output.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

import guest_probe
import pytest
from hypothesis import given
from hypothesis import strategies as st

from nfsconf.exporters import knfsd as guest
from nfsconf.vm.apt import AptError, system_debian_uris
from nfsconf.vm.kernels import KernelError, read_image_release, resolve_kernel
from nfsconf.vm.runner import VmError, run_in_vm

RELEASE_CHARS = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyz0123456789.-+_~", min_size=1, max_size=60
)


def fake_bzimage(release: str, *, proto: int = 0x020F, size: int = 0x8000) -> bytes:
    """A file with a valid x86 boot header whose kernel_version points at `release`."""
    img = bytearray(size)
    img[0x1FE:0x200] = b"\x55\xaa"
    img[0x202:0x206] = b"HdrS"
    img[0x206:0x208] = struct.pack("<H", proto)
    text_at = 0x3000
    img[0x20E:0x210] = struct.pack("<H", text_at - 0x200)
    banner = f"{release} (builder@host) #1 SMP PREEMPT_DYNAMIC".encode() + b"\0"
    img[text_at : text_at + len(banner)] = banner
    return bytes(img)


@given(RELEASE_CHARS)
def test_release_comes_from_the_boot_header(tmp_path_factory, release):
    p = tmp_path_factory.mktemp("img") / "bzImage"
    p.write_bytes(fake_bzimage(release))
    assert read_image_release(p) == release


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: b[:0x202] + b"XXXX" + b[0x206:], "not an x86 kernel image"),
        (lambda b: b[:0x1FE] + b"\0\0" + b[0x200:], "boot flag"),
        (lambda b: b[:0x20E] + b"\0\0" + b[0x210:], "no kernel version"),
        (lambda b: b[:0x100], "not an x86 kernel image"),
    ],
)
def test_broken_headers_are_refused(tmp_path, mutate, message):
    p = tmp_path / "img"
    p.write_bytes(mutate(fake_bzimage("6.1.0-test")))
    with pytest.raises(KernelError, match=message):
        read_image_release(p)


def test_old_boot_protocol_is_refused(tmp_path):
    p = tmp_path / "img"
    p.write_bytes(fake_bzimage("2.6.0", proto=0x0204))
    with pytest.raises(KernelError, match="too old"):
        read_image_release(p)


def test_missing_path_is_a_clear_error(tmp_path):
    with pytest.raises(KernelError, match="does not exist"):
        resolve_kernel(str(tmp_path / "nope" / "bzImage"), tmp_path)


def test_random_bytes_are_not_a_kernel_and_fail_fast(tmp_path):
    p = tmp_path / "vmlinuz"
    p.write_bytes(os.urandom(200_000))
    with pytest.raises(KernelError, match="not an x86 kernel image"):
        resolve_kernel(str(p), tmp_path)


def test_image_without_modules_names_the_expected_place(tmp_path):
    p = tmp_path / "bzImage"
    p.write_bytes(fake_bzimage("6.9.0-mine"))
    with pytest.raises(KernelError, match=r"no modules .*lib/modules/6\.9\.0-mine"):
        resolve_kernel(str(p), tmp_path)


def test_image_with_modules_beside_it(tmp_path):
    root = tmp_path / "out"
    (root / "lib/modules/6.9.0-mine/kernel").mkdir(parents=True)
    (root / "boot").mkdir()
    img = root / "boot" / "vmlinuz-6.9.0-mine"
    img.write_bytes(fake_bzimage("6.9.0-mine"))
    for spec in (img, root):  # the image itself, or the directory that holds it
        k = resolve_kernel(str(spec), tmp_path)
        assert (k.image, k.modules_root, k.release, k.tree) == (img, root, "6.9.0-mine", None)
        assert len(k.sha256) == 64


def test_merged_usr_layout_is_found(tmp_path):
    root = tmp_path / "deb"
    moddir = root / "usr/lib/modules/7.2.0-x"
    moddir.mkdir(parents=True)
    (moddir / "vmlinuz").write_bytes(fake_bzimage("7.2.0-x"))
    k = resolve_kernel(str(root), tmp_path)
    assert k.modules_root == root / "usr" and k.release == "7.2.0-x"


def test_release_mismatch_between_image_and_modules_is_an_error(tmp_path):
    root = tmp_path / "out"
    (root / "lib/modules/6.9.0-other").mkdir(parents=True)
    img = root / "bzImage"
    img.write_bytes(fake_bzimage("6.9.0-mine"))
    with pytest.raises(KernelError, match="no modules"):
        resolve_kernel(str(img), tmp_path)


def make_tree(tmp_path: Path, *, modules_built: bool, release: str = "6.12.0-rc1") -> Path:
    tree = tmp_path / "linux"
    (tree / "arch/x86/boot").mkdir(parents=True)
    (tree / "include/config").mkdir(parents=True)
    (tree / "arch/x86/boot/bzImage").write_bytes(fake_bzimage(release))
    (tree / "include/config/kernel.release").write_text(release + "\n")
    (tree / ".config").write_text("CONFIG_MODULES=y\nCONFIG_FUSE_FS=m\n")
    if modules_built:
        (tree / "modules.order").write_text("fs/fuse/fuse.ko\n")
    return tree


def test_built_tree_is_booted_as_a_tree(tmp_path):
    tree = make_tree(tmp_path, modules_built=True)
    for spec in (tree, tree / "arch/x86/boot/bzImage"):
        k = resolve_kernel(str(spec), tmp_path)
        assert k.tree == tree and k.run_target == tree and k.release == "6.12.0-rc1"


def test_tree_without_built_modules_is_an_error(tmp_path):
    tree = make_tree(tmp_path, modules_built=False)
    with pytest.raises(KernelError, match="make modules"):
        resolve_kernel(str(tree), tmp_path)


def test_unbuilt_tree_is_an_error(tmp_path):
    tree = tmp_path / "linux"
    tree.mkdir()
    (tree / "Makefile").write_text("VERSION = 6\n")
    (tree / "Kconfig").write_text("\n")
    with pytest.raises(KernelError, match="not built"):
        resolve_kernel(str(tree), tmp_path)


def test_bad_suite_name_is_refused(tmp_path):
    with pytest.raises(KernelError, match="bad Debian suite"):
        resolve_kernel("debian:../etc", tmp_path)


def test_run_in_vm_refuses_a_non_kernel_before_starting_anything(tmp_path, monkeypatch):
    from nfsconf.vm.kernels import Kernel

    p = tmp_path / "garbage"
    p.write_bytes(os.urandom(100_000))
    k = Kernel(p, None, "x", "0" * 64, "test")
    started = []
    monkeypatch.setattr(subprocess, "Popen", lambda *a, **kw: started.append(a) or 1 / 0)
    with pytest.raises((KernelError, VmError)):
        run_in_vm(k, ["true"], timeout=30)
    assert started == [], "nothing may be started for a file that is no kernel"


def test_apt_sources_in_both_formats(tmp_path):
    etc = tmp_path / "apt"
    (etc / "sources.list.d").mkdir(parents=True)
    (etc / "sources.list").write_text(
        "# comment\n"
        "deb [arch=amd64 signed-by=/k/one.gpg] http://mirror.example/debian bookworm main\n"
    )
    (etc / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://sec.example/debian-security\nSuites: bookworm-security\n"
        "Components: main\nSigned-By: /k/two.gpg\n\n"
        "Types: deb\nURIs: http://off.example/debian\nSuites: bookworm\nEnabled: no\n"
    )
    (etc / "sources.list.d" / "other.list.disabled").write_text(
        "deb http://x.example/debian sid main\n"
    )
    main, security, keyring = system_debian_uris(etc)
    assert (main, security, keyring) == (
        "http://mirror.example/debian",
        "http://sec.example/debian-security",
        Path("/k/one.gpg"),
    )


def test_no_debian_source_is_a_clear_error(tmp_path):
    etc = tmp_path / "apt"
    etc.mkdir()
    (etc / "sources.list").write_text("deb https://packages.example.com/apt stable main\n")
    with pytest.raises(AptError, match="no Debian mirror"):
        system_debian_uris(etc)


# --- handles ------------------------------------------------------------------------------


@given(st.binary(min_size=0, max_size=128), st.integers(0, 2**64 - 1), st.integers(0, 0o170000))
def test_server_fh_round_trips_through_the_nfs_client_layout(fh, fileid, mode):
    # fs/nfs/export.c: fileid hi, fileid lo, i_mode type (u32 each), then struct nfs_fh.
    raw = struct.pack("=III", fileid >> 32, fileid & 0xFFFFFFFF, mode)
    raw += len(fh).to_bytes(2, sys.byteorder) + fh
    raw += b"\0" * (-len(raw) % 4)
    assert guest_probe.nfs_client_server_fh(raw) == fh


def test_short_nfs_client_handle_is_refused():
    with pytest.raises(ValueError, match="too short"):
        guest_probe.nfs_client_server_fh(b"\0" * 10)
    with pytest.raises(ValueError, match="claims 64"):
        guest_probe.nfs_client_server_fh(b"\0" * 12 + (64).to_bytes(2, sys.byteorder) + b"\1" * 8)


def test_export_lines_carry_fsid_and_subtree_choice():
    nosub, sub = guest_probe.exports_for(Path("/mnt/fuse"), 101)
    assert (nosub.fsid, sub.fsid) == (101, 102)
    assert nosub.line(Path("/p/a")).startswith("/p/a 127.0.0.1(")
    opts = nosub.line(Path("/p/a")).split("(", 1)[1].rstrip(")").split(",")
    assert "fsid=101" in opts and "no_subtree_check" in opts and "subtree_check" not in opts
    opts = sub.line(Path("/p/b")).split("(", 1)[1].rstrip(")").split(",")
    assert "fsid=102" in opts and "subtree_check" in opts and "no_subtree_check" not in opts


def test_guest_setup_refuses_to_run_on_the_host(monkeypatch):
    # The host's /proc/cmdline has no nfsconf.guest=1: knfsd setup must not touch it.
    if "nfsconf.guest=1" in Path("/proc/cmdline").read_text().split():
        pytest.skip("running inside an nfsconf guest")
    monkeypatch.delenv("NFSCONF_GUEST_OK", raising=False)
    before = Path("/etc/exports").read_bytes() if Path("/etc/exports").exists() else None
    with pytest.raises(guest.GuestSetupError, match="outside an nfsconf guest"):
        guest.start_knfsd()
    after = Path("/etc/exports").read_bytes() if Path("/etc/exports").exists() else None
    assert before == after




@pytest.mark.parametrize(("suite", "pockets"), [
    ("bookworm", ["bookworm", "bookworm-updates", "bookworm-security"]),
    ("trixie", ["trixie", "trixie-updates", "trixie-security"]),
    ("trixie-backports", ["trixie-backports"]),
    ("sid", ["sid"]), ("experimental", ["experimental"])])
def test_private_sources_per_suite(suite, pockets):
    from nfsconf.vm.apt import sources_lines

    lines = sources_lines(suite, "http://m.example/debian", "http://s.example/debian-security",
                          Path("/k.gpg"))
    assert [ln.split()[3] for ln in lines] == pockets
    assert all(ln.startswith("deb [signed-by=/k.gpg] http://") for ln in lines)


def test_pack_of_changed_code_keeps_the_tar_a_running_lane_booted_with(tmp_path):
    """A second run of changed code packs the directory again; the first run's tar stays,
    so its next boot (after a kernel crash) runs the code it started with."""
    from nfsconf.vm.pack import pack_dir

    top, cache = tmp_path / "pkg", tmp_path / "cache"
    top.mkdir()
    (top / "a.py").write_text("A = 1\n")
    first = pack_dir(top, cache)
    (top / "a.py").write_text("A = 22\n")  # another size: another content key
    second = pack_dir(top, cache)
    assert second != first and first.is_file() and second.is_file()
    os.utime(first, (0, 0))  # unused for long: the next packing removes it
    (top / "a.py").write_text("A = 333\n")
    third = pack_dir(top, cache)
    assert not first.exists() and second.is_file() and third.is_file()


def test_guests_of_one_run_pack_the_same_directory_at_once(tmp_path):
    """The guests of one kernel's matrix start from threads of one process and pack the
    same code at the same moment: each gets a whole tar, none a temporary another moved."""
    import tarfile
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from nfsconf.vm.pack import pack_dir

    top, cache = tmp_path / "pkg", tmp_path / "cache"
    top.mkdir()
    for i in range(300):
        (top / f"m{i}.py").write_text(f"X = {i}\n" * 50)
    start = threading.Barrier(4)

    def pack(_: int) -> Path:
        start.wait()
        return pack_dir(top, cache)

    with ThreadPoolExecutor(4) as pool:
        tars = list(pool.map(pack, range(4)))
    assert len(set(tars)) == 1
    with tarfile.open(tars[0]) as t:
        assert len([n for n in t.getnames() if n.endswith(".py")]) == 300
    assert [p.name for p in cache.iterdir()] == [tars[0].name]  # no temporary left


def test_guest_code_run_without_site_packages_imports_with_the_stdlib_alone():
    """The VM tests' probe runs `python -S` in the guest (guest_python without site): what
    it imports, knfsd's set-up and the process module included, must need nothing else."""
    root = Path(__file__).resolve().parents[1]
    code = "import tests.guest_probe, nfsconf.exporters.knfsd, nfsconf.process"
    r = subprocess.run([sys.executable, "-S", "-c", code], cwd=root, capture_output=True,
                       text=True, env={"PYTHONPATH": str(root), "PATH": os.environ["PATH"]})
    assert r.returncode == 0, r.stderr
