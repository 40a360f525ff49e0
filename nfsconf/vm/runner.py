"""Boot a kernel under test with its engine, run one command, never leave a VM behind.

Engine-neutral: qemu (a bzImage under TCG, virtme-ng) and User-Mode Linux (an ARCH=um
binary run as a host process) differ only behind `vm/engine.py`. Both give the guest the
host's root with throw-away writes and the run's `rw_dirs` writable at the same paths, so
the host's venv, bindfs, nfs-utils and this package are usable inside it.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from nfsconf.errors import KernelError
from nfsconf.process import ProcessTree, ProcessTreeError
from nfsconf.vm.console import kernel_crash
from nfsconf.vm.engine import (  # noqa: F401 - the errors are this module's API too
    GUEST_FLAG,
    BootSpec,
    Engine,
    VmError,
    VmSetupError,
    engine_for,
    engine_named,
    search_path,
)
from nfsconf.vm.kernels import Kernel

_POLL = 0.1
# set when the run is interrupted: every VM of this process powers off at its next poll
_TERM_GRACE = 5.0
_CONSOLE_TAIL = 4000


class VmBootError(VmError):
    """The kernel did not boot to the guest command; `console_tail` shows how far it got."""

    def __init__(self, message: str, console_tail: str) -> None:
        super().__init__(f"{message}\n--- console tail ---\n{console_tail}")
        self.console_tail = console_tail


@dataclass
class VmResult:
    returncode: int | None  # of the guest command (None when timed out)
    stdout: str  # guest command's stdout
    console: str  # kernel console + guest command's stderr
    duration: float  # wall seconds, engine start to exit
    boot_seconds: float | None  # wall seconds from engine start to the guest command starting
    timed_out: bool
    argv: list[str] = field(default_factory=list)  # the engine's command line, for reports
    # Guest clock when the command started: kernel + init boot time, without the host-side
    # part (vng, initramfs, firmware) that boot_seconds includes.
    guest_boot_uptime: float | None = None
    # a boot before this one that panicked ahead of the guest command: its crash summary
    failed_boot: str | None = None
    engine: str = "qemu"

    @property
    def command_seconds(self) -> float | None:
        return None if self.boot_seconds is None else self.duration - self.boot_seconds


def check_host(engine: str = "qemu") -> list[str]:
    """Problems that keep a VM of ENGINE from starting, as install hints; empty when all is
    there."""
    return engine_named(engine).check_host()


def guest_python(module: str, *args: str, site: bool = False) -> list[str]:
    """Command line running `python -m module args` in the guest with this very venv.

    The guest sees the host's root, so the interpreter and the package are the same files.
    Without `site` the interpreter skips site-packages (-S): stdlib-only guest code
    starts faster, since each file looked up costs a round trip to the host.
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
    name: str | None = None,
    console_path: Path | None = None,
    cancel: threading.Event | None = None,
) -> VmResult:
    """Boot `kernel` with its engine, run `command` (argv, run by the guest's /bin/sh) and
    return its result.

    `cancel`, set from another thread, powers the VM off (Ctrl-C reaches only the main
    thread; several VMs run in others). The kernel console goes to `console_path` when
    given (kept after the run: the oops of a kernel under test is evidence), else to a
    temporary file.
    `timeout` bounds the whole run (boot included); `command_timeout`, if given, bounds the
    guest command alone (boot time varies with host load). When either passes, every
    process of the run is killed and `timed_out` is set. A kernel that does not reach the
    guest command within `boot_timeout` (default: `timeout`), or exits before it, raises
    VmBootError with the end of the console.
    """
    if not command:
        raise ValueError("run_in_vm needs a command")
    if timeout <= 0:
        raise ValueError("timeout must be positive")
    engine = engine_for(kernel)
    problems = engine.check_host()
    if problems:
        raise VmSetupError(f"cannot start a VM ({engine.name}):\n  " + "\n  ".join(problems))
    try:
        engine.check_image(kernel)
    except KernelError as e:
        raise VmSetupError(str(e)) from None
    for d in rw_dirs or []:
        if not Path(d).is_dir():
            raise VmError(f"rw dir {d} does not exist on the host")
    spec = BootSpec(command=list(command), memory=memory, cpus=cpus,
                    rw_dirs=[Path(d) for d in rw_dirs or []], cwd=cwd,
                    append=[*(append or []), GUEST_FLAG],
                    name=name or f"nfsconf-{uuid.uuid4().hex[:12]}")
    start = time.monotonic()
    failed_boot = None
    while True:
        left = timeout - (time.monotonic() - start)
        with tempfile.TemporaryDirectory(prefix="nfsconf-vm-") as tmp:
            work = Path(tmp)
            con_path = console_path or work / "console"
            try:
                result = _supervise(
                    engine, engine.argv(kernel, spec, work), work, con_path, cwd=cwd,
                    timeout=left,
                    boot_timeout=min(left, boot_timeout if boot_timeout is not None else left),
                    command_timeout=command_timeout, cancel=cancel or threading.Event(),
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


def _supervise(
    engine: Engine,
    argv: list[str],
    work: Path,
    con_path: Path,
    *,
    cwd: Path | None,
    timeout: float,
    boot_timeout: float,
    command_timeout: float | None,
    cancel: threading.Event,
) -> VmResult:
    env = dict(os.environ, PATH=search_path())
    out_path = work / "stdout"
    marker = engine.boot_marker
    # Regular files, not pipes, for fd 1 and 2: qemu reopens them through /proc/self/fd
    # (vng falls back to lossy redirection when it cannot), and files need no reader thread.
    with open(out_path, "ab") as out, open(con_path, "wb") as con:
        start = time.monotonic()
        if engine.console_on_stdout:
            tree = ProcessTree(argv, stdout=con, stderr=con, cwd=cwd, env=env)
        else:
            tree = ProcessTree(argv, stdout=out, stderr=con, cwd=cwd, env=env)
    boot_seconds: float | None = None
    timed_out = False
    boot_failed: str | None = None
    scanned = 0
    try:
        while True:
            tree.track()
            rc = tree.poll()
            now = time.monotonic() - start
            if boot_seconds is None:
                size = con_path.stat().st_size
                if size > scanned:
                    with open(con_path, "rb") as f:
                        f.seek(max(0, scanned - len(marker)))
                        if marker in f.read():
                            boot_seconds = now
                    scanned = size
            if rc is not None:
                break
            if cancel.is_set():  # Ctrl-C reaches the main thread only; VMs run in others
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
        try:
            tree.stop(_TERM_GRACE)
        except ProcessTreeError as e:
            raise VmError(f"could not kill VM processes: {e}") from None
    duration = time.monotonic() - start
    console = con_path.read_bytes().decode("utf-8", "replace")
    stdout = out_path.read_bytes().decode("utf-8", "replace")
    if boot_failed is None and not timed_out and boot_seconds is None:
        boot_failed = (f"VM exited ({engine.name} exit {tree.proc.returncode}) before the "
                       "guest command started")
    if boot_failed is not None:
        raise VmBootError(boot_failed, console[-_CONSOLE_TAIL:])
    returncode = tree.proc.returncode
    return VmResult(
        guest_boot_uptime=engine.guest_boot_uptime(console),
        returncode=None if timed_out or returncode is None else
        engine.exit_status(console, returncode),
        stdout=stdout,
        console=console,
        duration=duration,
        boot_seconds=boot_seconds,
        timed_out=timed_out,
        argv=argv,
        engine=engine.name,
    )
