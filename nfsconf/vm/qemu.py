"""The qemu engine: an x86 bzImage under TCG, booted by virtme-ng.

The guest sees the host's root read-only over 9p (with writable overlays on /etc, /var,
/tmp, ...), so the host's venv, bindfs, nfs-utils and this package are usable inside it.
Results come back through `rw_dirs` (9p read-write shares at the same paths).

KVM is never used: nested KVM hangs on the project's machines, TCG does not. A panic ends
the VM through virtme's own `panic=-1` (the guest reboots, qemu exits): with
console.PANIC_ON_TROUBLE every oops, hung task and soft lockup does.
"""

from __future__ import annotations

import re
import shlex
import shutil
import sys
from pathlib import Path

from nfsconf.vm.engine import BootSpec, VmSetupError, search_path
from nfsconf.vm.kernels import Kernel, read_image_release

# virtme-ng-init prints this (on the console, with -v) right before it runs --exec.
_MARKER_LINE = re.compile(r"\[\s*(\d+\.\d+)\] virtme-ng-init: starting script")

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


def find_vng() -> Path:
    """vng from the running venv first (it is installed there), then PATH."""
    local = Path(sys.executable).parent / "vng"
    if local.is_file():
        return local
    found = shutil.which("vng")
    if found is None:
        raise VmSetupError("virtme-ng is not installed: pip install virtme-ng")
    return Path(found)


class Qemu:
    name = "qemu"
    description = "qemu under TCG"
    time_scale = 4.0  # TCG: measured 4-10x slower than the host for the guest's Python
    pack_python = True
    console_on_stdout = False  # vng -v: the console on stderr, the command's stdout on stdout
    boot_marker = b"virtme-ng-init: starting script"

    def check_host(self) -> list[str]:
        problems = []
        path = search_path()
        for prog, pkg in HOST_REQUIREMENTS.items():
            if shutil.which(prog, path=path) is None:
                problems.append(f"{prog} missing: apt-get install {pkg}")
        udevd = ("/lib/systemd/systemd-udevd", "/usr/lib/systemd/systemd-udevd")
        if not any(Path(p).exists() for p in udevd):
            problems.append("systemd-udevd missing (the guest prints nothing without it): "
                            "install udev")
        try:
            find_vng()
        except VmSetupError as e:
            problems.append(str(e))
        return problems

    def check_image(self, kernel: Kernel) -> None:
        # A file that is no kernel makes qemu spin forever on garbage; refuse it up front.
        read_image_release(kernel.image)

    def argv(self, kernel: Kernel, spec: BootSpec, work: Path) -> list[str]:
        argv = [
            str(find_vng()), "--verbose", "--run", str(kernel.run_target),
            "--disable-kvm", "--force-9p", "--memory", spec.memory, "--cpus", str(spec.cpus),
            "--name", spec.name,
        ]  # fmt: skip
        for d in spec.rw_dirs:
            argv.append(f"--rwdir={Path(d).resolve()}")
        kargs = [*spec.append, "module_blacklist=" + ",".join(FAST_BOOT_BLACKLIST),
                 # the crypto self-tests run at boot for every algorithm registered; under
                 # TCG on an oversubscribed host one stalled 261 s (soft lockup in
                 # alg_test) and the VM missed its time limit. Nothing here relies on them.
                 "cryptomgr.notests"]
        for a in kargs:
            argv += ["--append", a]
        if spec.cwd is not None:
            argv += ["--cwd", str(spec.cwd)]
        # The command travels as a script the guest reads from the host's root, not on the
        # kernel command line: that holds 2048 bytes, and past them the kernel drops what
        # follows (init= among it) without a word.
        script = work / "command.sh"
        script.write_text("exec " + shlex.join(spec.command) + "\n")
        return [*argv, "--exec", f"/bin/sh {script}"]

    def exit_status(self, console: str, returncode: int) -> int | None:
        return returncode  # vng exits with the guest command's status

    def guest_boot_uptime(self, console: str) -> float | None:
        m = _MARKER_LINE.search(console)
        return float(m.group(1)) if m else None


QEMU = Qemu()
