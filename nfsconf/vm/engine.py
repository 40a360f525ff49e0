"""What a kernel engine is: the part of running a kernel under test that differs between
qemu (an x86 bzImage under TCG, through virtme-ng) and User-Mode Linux (an ARCH=um binary
run as a host process). Everything above the boot — the lane, knfsd, the results
protocol, crash records — is one code path; `runner.run_in_vm` drives an engine.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from nfsconf.vm.kernels import Kernel

# On every guest's kernel command line, both engines: the guest side refuses to rewrite
# /etc/exports or start NFS daemons anywhere else (exporters/knfsd.ensure_guest).
GUEST_FLAG = "nfsconf.guest=1"


class VmError(Exception):
    """The VM could not be run as asked."""


class VmSetupError(VmError):
    """The host lacks something the engine needs (vng, qemu, udev, ip, ...)."""


def search_path() -> str:
    """PATH for an engine and its guest tools: this venv's own commands first (vng), and
    the sbin directories (vng runs depmod, UML's init modprobe and ip)."""
    parts = [str(Path(sys.executable).parent)]
    parts += os.environ.get("PATH", "").split(os.pathsep)
    parts += ["/usr/local/sbin", "/usr/sbin", "/sbin"]
    return os.pathsep.join(dict.fromkeys(p for p in parts if p))


@dataclass(frozen=True)
class BootSpec:
    """One boot: what runs in the guest and with what it may write on the host."""
    command: list[str]  # argv, run by the guest's /bin/sh from a script file
    memory: str = "1G"
    cpus: int = 2
    rw_dirs: list[Path] = field(default_factory=list)  # host dirs the guest writes, same paths
    cwd: Path | None = None
    append: list[str] = field(default_factory=list)  # kernel command-line parameters
    name: str = ""  # on the engine's command line, to find its processes


class Engine(Protocol):
    name: str  # "qemu" | "uml": in the env record and vm.jsonl
    description: str  # how the lane says it boots: "qemu under TCG"
    # how many times slower than the host the guest runs: the lab's waits scale by it
    time_scale: float
    # the guest reads the host's files over a slow channel (9p under TCG): pack the
    # guest's Python into memory first (vm/pack.py)
    pack_python: bool
    # the kernel console is the engine process's stdout (else its stderr)
    console_on_stdout: bool
    # printed on the console right before the guest command starts
    boot_marker: bytes

    def check_host(self) -> list[str]:
        """What the host lacks to boot this engine, as install hints."""
        ...

    def check_image(self, kernel: Kernel) -> None:
        """Raise KernelError for an image this engine cannot boot."""
        ...

    def argv(self, kernel: Kernel, spec: BootSpec, work: Path) -> list[str]:
        """The host command line of one boot; files it needs go into WORK, where the guest
        command's stdout must land as WORK/stdout."""
        ...

    def exit_status(self, console: str, returncode: int) -> int | None:
        """The guest command's exit status, from the console and the engine's own exit
        status; None when the command did not finish."""
        ...

    def guest_boot_uptime(self, console: str) -> float | None:
        """The guest kernel's uptime when the command started, if the console says."""
        ...


def engine_named(name: str) -> Engine:
    """"qemu" or "uml" (imported on demand: each engine imports this module)."""
    if name == "uml":
        from nfsconf.vm.uml import UML

        return UML
    if name == "qemu":
        from nfsconf.vm.qemu import QEMU

        return QEMU
    raise ValueError(f"no kernel engine {name!r}")


def engine_for(kernel: Kernel) -> Engine:
    from nfsconf.vm.arch import arch

    return engine_named(arch(kernel.arch).engine)
