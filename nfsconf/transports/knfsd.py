"""The knfsd transport: the whole run happens inside a qemu VM (TCG) booted with the kernel
under test. The guest sees the host's root through 9p, so it runs this very venv: it brings
up knfsd with a tmpfs pseudo-root, puts every lab under that root (so NFSv4 reaches it),
exports each lab's FUSE mount with `exportfs -i` (transports/nfs.py) and writes the results
into the run directory, which the host mounts writable into the guest.

Host: `nfsconf run --transport knfsd [--kernel SPEC]` -> run_on_vm().
Guest: `python -m nfsconf.transports.knfsd RUN-ARGS...` -> guest_main()."""

from __future__ import annotations

import os
import shlex
import sys
import threading
import time
from pathlib import Path

IN_GUEST = "NFSCONF_IN_GUEST"


class KnfsdRunError(RuntimeError):
    """The VM could not run the suite: no boot, no nfsd, a timeout. One line for the user."""


def _tail(path: Path, stop: threading.Event, started: float) -> None:
    """Print the guest's output as it arrives: a long run must show progress."""
    first = True
    while not path.exists() and not stop.is_set():
        time.sleep(0.2)
    if not path.exists():
        return
    with open(path, errors="replace") as f:
        while True:
            line = f.readline()
            if line:
                print(line, end="", flush=True)
                if first and line.startswith("["):
                    first = False
                    print(f"knfsd: first result {time.monotonic() - started:.1f} s after "
                          "the VM started", flush=True)
            elif stop.is_set():
                return
            else:
                time.sleep(0.2)


def run_on_vm(kernel_spec: str | None, out: Path, run_args: list[str],
              timeout: float) -> int:
    from nfsconf.vm.kernels import KernelError, default_cache_dir, resolve_kernel
    from nfsconf.vm.runner import VmBootError, VmError, guest_python, run_in_vm

    try:
        kernel = resolve_kernel(kernel_spec, default_cache_dir())
    except KernelError as e:
        raise KnfsdRunError(str(e)) from e
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    log = out / "guest.log"
    log.unlink(missing_ok=True)  # a resumed run's old log would read as fresh progress
    print(f"knfsd: kernel {kernel.release} ({kernel.source}), sha256 {kernel.sha256[:16]}; "
          f"booting under TCG", flush=True)
    inner = guest_python("nfsconf.transports.knfsd", *run_args, "--out", str(out), site=True)
    # after `env`: what the guest's environment record needs to name the kernel build
    inner[1:1] = [f"NFSCONF_KERNEL_IMAGE={kernel.image}", f"NFSCONF_KERNEL_SOURCE={kernel.source}",
                  "PYTHONUNBUFFERED=1"]  # its output goes to a file the host tails live
    command = ["sh", "-c", f"{shlex.join(inner)} > {shlex.quote(str(log))} 2>&1"]
    stop = threading.Event()
    started = time.monotonic()
    tail = threading.Thread(target=_tail, args=(log, stop, started), daemon=True)
    tail.start()
    try:
        result = run_in_vm(kernel, command, timeout=timeout, rw_dirs=[out],
                           boot_timeout=min(timeout, 300))
    except VmBootError as e:
        raise KnfsdRunError(f"kernel {kernel.release} did not boot: {e}") from e
    except VmError as e:
        raise KnfsdRunError(str(e)) from e
    finally:
        stop.set()
        tail.join()
    if result.timed_out:
        raise KnfsdRunError(f"the VM run exceeded {timeout:g} s and was powered off; the "
                            f"results it wrote are in {out}/results.jsonl")
    print(f"knfsd: VM done in {time.monotonic() - started:.1f} s (boot "
          f"{result.boot_seconds or 0:.1f} s), guest exit status {result.returncode}",
          flush=True)
    return result.returncode


def guest_main(argv: list[str]) -> int:
    import tempfile

    from nfsconf.cli import main
    from nfsconf.servers.mount import release_fusectl
    from nfsconf.vm.guest import GuestSetupError, load_modules, start_knfsd

    try:
        load_modules(("fuse", "nfsd", "nfs", "nfsv3", "nfsv4"))
        knfsd = start_knfsd([])
    except GuestSetupError as e:
        print(f"nfsconf: error: {e}", file=sys.stderr)
        return 2
    try:
        pseudo = knfsd.root / "pseudo"
        labs = pseudo / "labs"
        labs.mkdir(exist_ok=True)
        os.environ.update(TMPDIR=str(labs), NFSCONF_V4ROOT=str(pseudo), **{IN_GUEST: "1"})
        tempfile.tempdir = None  # take the new TMPDIR
        return main(["run", "--transport", "knfsd", *argv])
    finally:
        release_fusectl()  # before the pseudo-root goes: nothing of ours may keep it busy
        try:
            knfsd.stop()
        except GuestSetupError as e:
            print(f"nfsconf: warning: {e}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(guest_main(sys.argv[1:]))
