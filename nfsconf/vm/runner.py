"""Boot a kernel in qemu (TCG) with virtme-ng, run one command, never leave a VM behind.

The guest sees the host's root read-only over 9p (with writable overlays on /etc, /var,
/tmp, ...), so the host's venv, bindfs, nfs-utils and this package are usable inside it.
Results come back through `rw_dirs` (9p read-write shares at the same paths).

KVM is never used: nested KVM hangs on the project's machines, TCG does not.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from nfsconf.vm.console import kernel_crash
from nfsconf.vm.kernels import Kernel, read_image_release

# virtme-ng-init prints this (on the console, with -v) right before it runs --exec.
_SCRIPT_MARKER = b"virtme-ng-init: starting script"
_MARKER_LINE = re.compile(r"\[\s*(\d+\.\d+)\] virtme-ng-init: starting script")
_POLL = 0.1
# set when the run is interrupted: every VM of this process powers off at its next poll
CANCEL = threading.Event()
_TERM_GRACE = 5.0
_CONSOLE_TAIL = 4000

# udev coldplug in the guest loads drivers for qemu's q35 devices (AHCI, CD-ROM, watchdogs)
# and CPU-feature crypto/KVM modules; none of that matters for FUSE or NFS, and loading it
# from 9p under TCG costs ~3 s per boot (measured: script start at 11.7 s -> 8.5 s uptime).
# module_blacklist= is enforced by the kernel, so it also holds for modprobe from udev.
FAST_BOOT_BLACKLIST = (
    "kvm", "kvm_amd", "kvm_intel", "ccp", "ahci", "libahci", "libata", "sr_mod", "cdrom",
    "sg", "scsi_mod", "iTCO_wdt", "iTCO_vendor_support", "intel_pmc_bxt", "i6300esb",
    "i2c_i801", "i2c_smbus", "lpc_ich", "psmouse", "pcspkr", "serio_raw", "evdev",
    "button", "qemu_fw_cfg", "powernow_k8", "aesni_intel", "ghash_clmulni_intel",
    "sha1_ssse3", "sha256_ssse3", "sha512_ssse3", "crc32_pclmul", "crc32c_intel",
    "crct10dif_pclmul",
)  # fmt: skip

# Host programs the VM needs, with the Debian package that provides each.
HOST_REQUIREMENTS = {
    "qemu-system-x86_64": "qemu-system-x86",
    "busybox": "busybox-static",
    "udevadm": "udev",
    "depmod": "kmod",
}


class VmError(Exception):
    """The VM could not be run as asked."""


class VmSetupError(VmError):
    """The host lacks something the VM needs (vng, qemu, udev, ...)."""


class VmBootError(VmError):
    """The kernel did not boot to the guest command; `console_tail` shows how far it got."""

    def __init__(self, message: str, console_tail: str) -> None:
        super().__init__(f"{message}\n--- console tail ---\n{console_tail}")
        self.console_tail = console_tail


@dataclass
class VmResult:
    returncode: int | None  # of the guest command (None when timed out)
    stdout: str  # guest command's stdout
    console: str  # kernel console + guest command's stderr (vng -v merges them)
    duration: float  # wall seconds, vng start to exit
    boot_seconds: float | None  # wall seconds from vng start to the guest command starting
    timed_out: bool
    argv: list[str] = field(default_factory=list)  # the vng command line, for reports
    # Guest clock (console timestamp) when the command started: kernel + init boot time,
    # without the host-side part (vng, initramfs, firmware) that boot_seconds includes.
    guest_boot_uptime: float | None = None
    # a boot before this one that panicked ahead of the guest command: its crash summary
    failed_boot: str | None = None

    @property
    def command_seconds(self) -> float | None:
        return None if self.boot_seconds is None else self.duration - self.boot_seconds


def find_vng() -> Path:
    """vng from the running venv first (it is installed there), then PATH."""
    local = Path(sys.executable).parent / "vng"
    if local.is_file():
        return local
    found = shutil.which("vng")
    if found is None:
        raise VmSetupError("virtme-ng is not installed: pip install virtme-ng")
    return Path(found)


def check_host() -> list[str]:
    """Problems that keep a VM from starting, as install hints; empty when all is there."""
    problems = []
    path = _search_path()
    for prog, pkg in HOST_REQUIREMENTS.items():
        if shutil.which(prog, path=path) is None:
            problems.append(f"{prog} missing: apt-get install {pkg}")
    udevd = ("/lib/systemd/systemd-udevd", "/usr/lib/systemd/systemd-udevd")
    if not any(Path(p).exists() for p in udevd):
        problems.append("systemd-udevd missing (the guest prints nothing without it): install udev")
    try:
        find_vng()
    except VmSetupError as e:
        problems.append(str(e))
    return problems


def guest_python(module: str, *args: str, site: bool = False) -> list[str]:
    """Command line running `python -m module args` in the guest with this very venv.

    The guest sees the host's root, so the interpreter and the package are the same files.
    Without `site` the interpreter skips site-packages (-S): stdlib-only guest code such as
    guest code starts faster, since each file looked up costs 9p round trips.
    """
    root = Path(__file__).resolve().parents[2]
    flags = [] if site else ["-S"]
    return ["env", f"PYTHONPATH={root}", sys.executable, *flags, "-m", module, *args]


def run_in_vm(
    kernel: Kernel,
    command: list[str],
    *,
    timeout: float,
    memory: str = "1G",
    cpus: int = 2,
    rw_dirs: list[Path] | None = None,
    cwd: Path | None = None,
    boot_timeout: float | None = None,
    command_timeout: float | None = None,
    append: list[str] | None = None,
    fast_boot: bool = True,
    name: str | None = None,
    console_path: Path | None = None,
) -> VmResult:
    """Boot `kernel`, run `command` (argv, run by the guest's /bin/sh) and return its result.

    The kernel console goes to `console_path` when given (kept after the run: the oops of a
    kernel under test is evidence), else to a temporary file.
    `timeout` bounds the whole run (boot included); `command_timeout`, if given, bounds the
    guest command alone (boot time varies with host load). When either passes, every
    process of the run (vng, virtme-run, qemu) is killed and `timed_out` is set. A kernel
    that does not reach the guest command within `boot_timeout` (default: `timeout`), or
    exits before it, raises VmBootError with the end of the console.
    """
    if not command:
        raise ValueError("run_in_vm needs a command")
    if timeout <= 0:
        raise ValueError("timeout must be positive")
    problems = check_host()
    if problems:
        raise VmSetupError("cannot start a VM:\n  " + "\n  ".join(problems))
    # A file that is no kernel makes qemu spin forever on garbage; refuse it up front.
    read_image_release(kernel.image)
    for d in rw_dirs or []:
        if not Path(d).is_dir():
            raise VmError(f"rw dir {d} does not exist on the host")

    vm_name = name or f"nfsconf-{uuid.uuid4().hex[:12]}"
    argv = [
        str(find_vng()), "--verbose", "--run", str(kernel.run_target),
        "--disable-kvm", "--force-9p", "--memory", memory, "--cpus", str(cpus),
        "--name", vm_name,
    ]  # fmt: skip
    for d in rw_dirs or []:
        argv.append(f"--rwdir={Path(d).resolve()}")
    kargs = list(append or [])
    if fast_boot:
        kargs.append("module_blacklist=" + ",".join(FAST_BOOT_BLACKLIST))
        # the crypto self-tests run at boot for every algorithm registered; under TCG on
        # an oversubscribed host one stalled 261 s (soft lockup in alg_test) and the VM
        # missed its time limit. Nothing here relies on them.
        kargs.append("cryptomgr.notests")
    for a in kargs:
        argv += ["--append", a]
    if cwd is not None:
        argv += ["--cwd", str(cwd)]

    with tempfile.TemporaryDirectory(prefix="nfsconf-vm-") as tmp:
        # The command travels as a script the guest reads from the host's root, not on the
        # kernel command line: that holds 2048 bytes, and past them the kernel drops what
        # follows (init= among it) without a word.
        script = Path(tmp) / "command.sh"
        script.write_text("exec " + shlex.join(command) + "\n")
        argv += ["--exec", f"/bin/sh {script}"]
        out_path = Path(tmp) / "stdout"
        con_path = console_path or Path(tmp) / "console"
        start = time.monotonic()
        failed_boot = None
        while True:
            left = timeout - (time.monotonic() - start)
            try:
                result = _supervise(
                    argv,
                    out_path,
                    con_path,
                    cwd=cwd,
                    timeout=left,
                    boot_timeout=min(left, boot_timeout if boot_timeout is not None else left),
                    command_timeout=command_timeout,
                )
            except VmBootError as e:
                if failed_boot is not None:
                    raise VmBootError(f"{e.args[0].splitlines()[0]} (on a second boot; the "
                                      f"first had panicked: {failed_boot})", e.console_tail) from e
                # Under TCG a sound kernel has panicked in early boot (Debian's sid kernel:
                # an int3 oops in set_next_task_fair while it patched its own text, seen
                # once): one more boot tells that from a kernel that cannot boot, and the
                # first stays on record, never hidden.
                crash = kernel_crash(e.console_tail)
                if crash is None or "Kernel panic" not in e.console_tail or left < 2 * _RETRY_MIN:
                    raise
                failed_boot = crash.summary()
                if console_path is not None:
                    shutil.copyfile(con_path, con_path.with_name(con_path.name + ".failed-boot"))
                continue
            result.failed_boot = failed_boot
            return result


_RETRY_MIN = 30.0  # seconds a second boot needs at least to be worth trying


def _search_path() -> str:
    # vng runs virtme-run through the shell and needs depmod (in /usr/sbin).
    parts = [str(Path(sys.executable).parent)]
    parts += os.environ.get("PATH", "").split(os.pathsep)
    parts += ["/usr/local/sbin", "/usr/sbin", "/sbin"]
    seen: list[str] = []
    for p in parts:
        if p and p not in seen:
            seen.append(p)
    return os.pathsep.join(seen)


def _supervise(
    argv: list[str],
    out_path: Path,
    con_path: Path,
    *,
    cwd: Path | None,
    timeout: float,
    boot_timeout: float,
    command_timeout: float | None,
) -> VmResult:
    env = dict(os.environ, PATH=_search_path())
    # Regular files, not pipes, for fd 1 and 2: qemu reopens them through /proc/self/fd
    # (vng falls back to lossy redirection when it cannot), and files need no reader thread.
    with open(out_path, "wb") as out, open(con_path, "wb") as con:
        start = time.monotonic()
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=con,
            cwd=cwd,
            env=env,
            start_new_session=True,  # its own process group: one killpg reaches qemu too
        )
    seen: dict[int, float] = {}  # pid -> create_time of every process of this run
    boot_seconds: float | None = None
    timed_out = False
    boot_failed: str | None = None
    scanned = 0
    try:
        while True:
            _track(proc.pid, seen)
            rc = proc.poll()
            now = time.monotonic() - start
            if boot_seconds is None:
                size = con_path.stat().st_size
                if size > scanned:
                    with open(con_path, "rb") as f:
                        f.seek(max(0, scanned - len(_SCRIPT_MARKER)))
                        if _SCRIPT_MARKER in f.read():
                            boot_seconds = now
                    scanned = size
            if rc is not None:
                break
            if CANCEL.is_set():  # Ctrl-C reaches the main thread only; VMs run in others
                raise KeyboardInterrupt("VM run cancelled")
            if now >= timeout:
                timed_out = True
                break
            if (
                command_timeout is not None
                and boot_seconds is not None
                and now - boot_seconds >= command_timeout
            ):
                timed_out = True
                break
            if boot_seconds is None and now >= boot_timeout:
                boot_failed = f"kernel did not reach the guest command within {boot_timeout:.0f} s"
                break
            time.sleep(_POLL)
    finally:
        if proc.poll() is None:
            _kill_run(proc, seen)
        else:
            _reap_leftovers(seen)
    duration = time.monotonic() - start
    console = con_path.read_bytes().decode("utf-8", "replace")
    stdout = out_path.read_bytes().decode("utf-8", "replace")
    if boot_failed is None and not timed_out and boot_seconds is None:
        boot_failed = f"VM exited (vng exit {proc.returncode}) before the guest command started"
    if boot_failed is not None:
        raise VmBootError(boot_failed, console[-_CONSOLE_TAIL:])
    m = _MARKER_LINE.search(console)
    return VmResult(
        guest_boot_uptime=float(m.group(1)) if m else None,
        returncode=None if timed_out else proc.returncode,
        stdout=stdout,
        console=console,
        duration=duration,
        boot_seconds=boot_seconds,
        timed_out=timed_out,
        argv=argv,
    )


def _track(root_pid: int, seen: dict[int, float]) -> None:
    try:
        root = psutil.Process(root_pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for p in procs:
        try:
            seen.setdefault(p.pid, p.create_time())
        except psutil.NoSuchProcess:
            pass


def _alive(seen: dict[int, float]) -> list[psutil.Process]:
    """Processes of this run still running (a reused PID with another start time is not)."""
    alive = []
    for pid, created in seen.items():
        try:
            p = psutil.Process(pid)
            if p.create_time() == created and p.status() != psutil.STATUS_ZOMBIE:
                alive.append(p)
        except psutil.NoSuchProcess:
            pass
    return alive


def _kill_run(proc: subprocess.Popen[bytes], seen: dict[int, float]) -> None:
    _track(proc.pid, seen)
    for sig, grace in ((signal.SIGTERM, _TERM_GRACE), (signal.SIGKILL, _TERM_GRACE)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        # Anything of ours that left the process group gets the signal by PID.
        for p in _alive(seen):
            try:
                p.send_signal(sig)
            except psutil.NoSuchProcess:
                pass
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            continue
        deadline = time.monotonic() + grace
        while _alive(seen) and time.monotonic() < deadline:
            time.sleep(_POLL)
        if not _alive(seen):
            return
    left = _alive(seen)
    if left:
        raise VmError(f"could not kill VM processes: {[p.pid for p in left]}")


def _reap_leftovers(seen: dict[int, float]) -> None:
    # vng exited on its own; its qemu must have too. Anything still running is killed.
    deadline = time.monotonic() + _TERM_GRACE
    while _alive(seen) and time.monotonic() < deadline:
        time.sleep(_POLL)
    for p in _alive(seen):
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
