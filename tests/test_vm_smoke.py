"""Boot Debian's kernel — its User-Mode Linux build as a host process, its bzImage under
qemu (TCG) where the qemu path itself is under test — and run knfsd over a FUSE mount
inside it.

Every verdict here comes from the guest kernel: the probe's JSON holds what the kernel NFS
client read and the handles the kernel encoded; the host checks them against each other.
The runner's own mechanics (time limits, a kernel that panics at boot) are engine-neutral
and run on UML; what only qemu does (a bzImage that does not boot, vng's modules) on qemu.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest

from nfsconf.handles import decode_nfs_fh
from nfsconf.vm.kernels import Kernel, default_cache_dir, resolve_kernel
from nfsconf.vm.runner import VmBootError, VmSetupError, check_host, guest_python, run_in_vm

pytestmark = pytest.mark.vm

FSID = 101
SPECS = {"qemu": None, "uml": "uml:debian"}  # Debian's kernel for this system, each engine


def _kernel(engine: str) -> Kernel:
    problems = check_host(engine)
    if problems:
        pytest.skip(f"{engine} prerequisites missing: " + "; ".join(problems))
    return resolve_kernel(SPECS[engine], default_cache_dir())


@pytest.fixture(scope="module")
def kernel() -> Kernel:
    """qemu's: for what only the qemu path does."""
    return _kernel("qemu")


@pytest.fixture(scope="module")
def uml() -> Kernel:
    return _kernel("uml")


def vm_processes(name: str) -> list[int]:
    """PIDs whose command line carries this run's VM name (vng, virtme-run, qemu -name)."""
    found = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        if any(name in part for part in p.info["cmdline"] or []):
            found.append(p.info["pid"])
    return found


def test_knfsd_exports_fuse_to_kernel_clients(uml, tmp_path):
    """On UML: the kernel's knfsd and NFS client are the same code on both engines, and
    qemu's lane, which proves knfsd exports FUSE there, is test_knfsd.py's (a TCG boot
    less)."""
    kernel = uml
    marker = f"nfsconf-{uuid.uuid4().hex}"
    out = tmp_path / "probe.json"
    name = f"nfsconf-test-{uuid.uuid4().hex[:8]}"
    cmd = guest_python(
        "tests.guest_probe", "probe", "--out", str(out), "--marker", marker, "--fsid", str(FSID)
    )
    r = run_in_vm(kernel, cmd, timeout=300, rw_dirs=[tmp_path], name=name)
    assert vm_processes(name) == []
    assert out.exists(), f"no probe result; rc={r.returncode}\n{r.console[-3000:]}"
    res = json.loads(out.read_text())
    assert res["ok"], res.get("traceback")
    assert r.returncode == 0
    assert res["release"] == kernel.release
    print(
        f"\n[vm smoke] {kernel.source}: boot-to-command {r.boot_seconds:.1f} s wall "
        f"(guest clock {r.guest_boot_uptime} s), probe {r.command_seconds:.1f} s "
        f"(guest python start {res['uptime_start'] - (r.guest_boot_uptime or 0):.1f} s), "
        f"total {r.duration:.1f} s; guest timings {res['timings']}; "
        f"knfsd {res['knfsd_timings']}"
    )

    # Content: what the kernel client read is what the host put in (through FUSE + knfsd).
    clients = {(c["export"], c["version"]): c for c in res["clients"]}
    assert set(clients) == {
        ("fuse-nosubtree", "3"),
        ("fuse-nosubtree", "4.2"),
        ("fuse-subtree", "3"),
    }
    assert all(c["content"] == marker for c in clients.values())
    assert res["written_back"] == f"{marker}-written-over-v4.2"
    assert res["grace_ended"] is True

    # Handles: knfsd wraps the FUSE fid that name_to_handle_at gives on the FUSE mount.
    fuse_file = bytes.fromhex(res["fuse_file"]["hex"])
    fuse_dir = bytes.fromhex(res["fuse_dir"]["hex"])
    assert res["fuse_file"]["type"] == 0x81 and len(fuse_file) == 12

    v3 = bytes.fromhex(clients[("fuse-nosubtree", "3")]["server_fh"])
    v4 = bytes.fromhex(clients[("fuse-nosubtree", "4.2")]["server_fh"])
    assert v3 == v4, "NFSv3 and NFSv4.2 got different handles for one file of one export"
    fh = decode_nfs_fh(v3)  # the codec checks fh_version 1 and auth type 0
    assert (fh.fsid_type, fh.fileid_type) == (1, 0x81)
    assert int.from_bytes(fh.fsid, "little") == FSID
    assert fh.fid.encode() == fuse_file

    sub = decode_nfs_fh(bytes.fromhex(clients[("fuse-subtree", "3")]["server_fh"]))
    assert (sub.fsid_type, sub.fileid_type) == (1, 0x82)
    assert int.from_bytes(sub.fsid, "little") == FSID + 1
    assert sub.fid.encode() == fuse_file + fuse_dir, "subtree_check handle must carry the parent"

    # The exports table the kernel used holds the fsids we asked for.
    assert f"fsid={FSID}," in res["exports"] and f"fsid={FSID + 1}," in res["exports"]

    # Teardown inside the guest left nothing behind.
    assert res["teardown_errors"] == []
    assert res["left_mounted"] == [] and res["left_running"] == []


def test_hanging_guest_command_is_killed_at_the_timeout(uml):
    kernel = uml
    name = f"nfsconf-test-{uuid.uuid4().hex[:8]}"
    start = time.monotonic()
    # longer than the 2048 bytes of a kernel command line: it must still arrive whole
    word = "x" * 3000
    r = run_in_vm(
        kernel,
        ["sh", "-c", f"echo started {word}; exec sleep 100000"],
        timeout=300,
        command_timeout=5,
        name=name,
    )
    elapsed = time.monotonic() - start
    assert r.timed_out and r.returncode is None
    assert f"started {word}" in r.stdout, "the timeout must hit the running command"
    assert r.boot_seconds is not None and elapsed - r.boot_seconds < 5 + 20
    assert vm_processes(name) == []


# a supervisor that boots the VM from a thread (as a --jobs lane does) and is then killed
SUPERVISOR = """
import sys, threading
from nfsconf.vm.kernels import default_cache_dir, resolve_kernel
from nfsconf.vm.runner import run_in_vm
kernel = resolve_kernel("uml:debian", default_cache_dir())
threading.Thread(target=run_in_vm, args=(kernel, ["sh", "-c", "exec sleep 100000"]),
                 kwargs=dict(timeout=600, name=sys.argv[1])).start()
"""


def test_a_guest_ends_when_its_supervisor_is_killed_outright(uml, tmp_path):
    """SIGKILL (the OOM killer, a CI time limit) gives the supervisor no chance to power
    the guest off: the kernel's parent-death signal must, or 1 GiB stays taken."""
    name = f"nfsconf-test-{uuid.uuid4().hex[:8]}"
    # its work directory, left behind, goes with tmp_path
    sup = subprocess.Popen([sys.executable, "-c", SUPERVISOR, name], cwd=tmp_path,
                           env={**os.environ, "TMPDIR": str(tmp_path)})
    try:
        end = time.monotonic() + 60
        while len(vm_processes(name)) < 2 and time.monotonic() < end:  # UML has forked
            time.sleep(0.1)
        assert vm_processes(name), "the guest never started"
        sup.kill()
        sup.wait()
        end = time.monotonic() + 20
        while vm_processes(name) and time.monotonic() < end:
            time.sleep(0.1)
        assert vm_processes(name) == [], "the guest outlived its supervisor"
    finally:
        sup.kill()
        sup.wait()
        for pid in vm_processes(name):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_truncated_kernel_gives_a_boot_error_with_the_console(kernel, tmp_path):
    # A real header with most of the payload cut off: qemu loads it, it never boots.
    broken = tmp_path / "vmlinuz-truncated"
    with open(kernel.image, "rb") as f:
        broken.write_bytes(f.read(3_000_000))
    k = Kernel(broken, None, kernel.release, "0" * 64, "truncated")
    name = f"nfsconf-test-{uuid.uuid4().hex[:8]}"
    start = time.monotonic()
    # Measured: this one stops in the real-mode setup and qemu exits at once; a hang
    # would end at boot_timeout. Either way the caller gets a VmBootError quickly.
    with pytest.raises(VmBootError, match="before the guest command|did not reach") as e:
        run_in_vm(k, ["true"], timeout=120, boot_timeout=15, name=name)
    assert time.monotonic() - start < 15 + 20
    assert e.value.console_tail.strip(), "the error must show how far the boot got"
    assert vm_processes(name) == []


def test_truncated_uml_binary_is_refused_before_any_boot(uml, tmp_path):
    broken = tmp_path / "linux"
    with open(uml.image, "rb") as f:
        broken.write_bytes(f.read(1_000_000))
    broken.chmod(0o755)
    k = Kernel(broken, None, uml.release, "0" * 64, "truncated", arch="um")
    with pytest.raises(VmSetupError, match="not a User-Mode Linux kernel that runs here"):
        run_in_vm(k, ["true"], timeout=60)


def test_boot_that_does_not_reach_the_command_in_time_is_killed(kernel):
    # From the host a stuck boot and a slow one look alike: no guest command by the
    # deadline. 4 s is well below this kernel's boot time under TCG (~8-16 s measured).
    name = f"nfsconf-test-{uuid.uuid4().hex[:8]}"
    start = time.monotonic()
    with pytest.raises(VmBootError, match="did not reach the guest command within 4 s"):
        run_in_vm(kernel, ["true"], timeout=120, boot_timeout=4, name=name)
    assert time.monotonic() - start < 4 + 15
    assert vm_processes(name) == []


def test_kernel_that_panics_exits_with_a_boot_error(uml):
    # No init: the kernel panics and UML exits (qemu: panic=-1 reboots, qemu exits; the
    # runner's handling is the same code)
    kernel = uml
    name = f"nfsconf-test-{uuid.uuid4().hex[:8]}"
    with pytest.raises(VmBootError, match="exited") as e:
        run_in_vm(kernel, ["true"], timeout=120, append=["init=/nonexistent"], name=name)
    assert "panic" in e.value.console_tail.lower()
    # an early panic is booted once more (TCG has panicked sound kernels); it stays on record
    assert "on a second boot; the first had panicked: Kernel panic" in str(e.value), e.value
    assert vm_processes(name) == []


def _link_or_copy(src, dst):
    """A hard link where the cache and tmp_path share a mount, else a copy (a tmpfs /tmp,
    a cache bound in from elsewhere)."""
    try:
        os.link(src, dst)
    except OSError as e:
        if e.errno != errno.EXDEV:
            raise
        shutil.copy2(src, dst)
    return dst


def test_kernel_without_nfsd_is_reported_by_config_name(uml, tmp_path):
    # Debian's UML with nfsd.ko removed from (a hard-linked copy of) its modules: the
    # guest's module loading is one code path for both engines.
    assert uml.modules_root is not None
    root = tmp_path / "root"
    mods = (uml.modules_root / "lib/modules" / uml.release).resolve()
    dest = root / "lib/modules" / uml.release
    dest.parent.mkdir(parents=True)
    shutil.copytree(mods, dest, symlinks=True, copy_function=_link_or_copy)
    removed = [p for p in dest.rglob("nfsd.ko*")]
    assert removed, "Debian's UML ships nfsd as a module"
    for p in removed:
        p.unlink()
    for f in dest.glob("modules.*"):
        data = f.read_bytes()  # break the hard link: depmod must not rewrite the cache's
        f.unlink()
        f.write_bytes(data)
    depmod = shutil.which("depmod") or "/usr/sbin/depmod"
    subprocess.run([depmod, "-b", str(root), uml.release], check=True)
    k = Kernel(uml.image, root, uml.release, uml.sha256, "uml without nfsd", arch="um")
    r = run_in_vm(k, guest_python("tests.guest_probe", "modules"), timeout=300)
    assert r.returncode == 2, r.console[-2000:]
    assert "CONFIG_NFSD" in r.console
    assert "CONFIG_FUSE_FS" not in r.console  # only what is really missing is named


def test_uml_guest_writes_reach_only_the_run_directory(uml, tmp_path):
    """The guest writes where knfsd and Python write (/etc, /var, the project's tree, /tmp
    outside the run): none of it reaches the host; the run directory gets its file."""
    token = uuid.uuid4().hex
    elsewhere = [Path("/etc") / f"nfsconf-{token}", Path("/var/lib") / f"nfsconf-{token}",
                 Path(__file__).parent / f"nfsconf-{token}", Path("/tmp") / f"nfsconf-{token}"]
    script = "; ".join(f"echo guest > {p}" for p in elsewhere)
    r = run_in_vm(uml, ["sh", "-c", f"{script}; echo kept > {tmp_path}/kept; "
                                    f"cat {elsewhere[0]}"], timeout=120, rw_dirs=[tmp_path])
    assert r.returncode == 0 and r.stdout.strip() == "guest", r.console[-2000:]
    assert (tmp_path / "kept").read_text() == "kept\n"
    assert [p for p in elsewhere if p.exists()] == []
