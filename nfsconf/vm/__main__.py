"""Manual entry: `python -m nfsconf.vm [--kernel SPEC] CMD...` runs one command in a guest
booted with the kernel and prints its output; on a failure the console's end follows."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nfsconf.errors import KernelError
from nfsconf.vm.kernels import default_cache_dir, resolve_kernel
from nfsconf.vm.runner import VmError, run_in_vm


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m nfsconf.vm", description=__doc__)
    ap.add_argument("--kernel", help="debian:<suite>, a bzImage/vmlinuz, or a built tree")
    ap.add_argument("--cache", type=Path, default=default_cache_dir())
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument("command", nargs="+")
    args = ap.parse_args(argv)
    try:
        kernel = resolve_kernel(args.kernel, args.cache)
        print(f"kernel: {kernel.source} ({kernel.release}, sha256 {kernel.sha256[:16]})")
        r = run_in_vm(kernel, args.command, timeout=args.timeout)
    except (KernelError, VmError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    sys.stdout.write(r.stdout)
    if r.returncode:
        print(r.console[-3000:], file=sys.stderr)
    print(f"exit {r.returncode}, boot {r.boot_seconds} s, total {r.duration:.1f} s")
    return 124 if r.timed_out else (r.returncode or 0)


if __name__ == "__main__":
    sys.exit(main())
