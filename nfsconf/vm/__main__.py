"""Manual entry: `python -m nfsconf.vm [--kernel SPEC] probe | run -- CMD...`.

`probe` boots the kernel and runs the knfsd-over-FUSE smoke (nfsconf.vm.guest probe),
printing its JSON; `run` runs any command in the guest.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import uuid
from pathlib import Path

from nfsconf.vm.kernels import KernelError, default_cache_dir, resolve_kernel
from nfsconf.vm.runner import VmError, guest_python, run_in_vm


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m nfsconf.vm", description=__doc__)
    ap.add_argument("--kernel", help="debian:<suite>, a bzImage/vmlinuz, or a built tree")
    ap.add_argument("--cache", type=Path, default=default_cache_dir())
    ap.add_argument("--timeout", type=float, default=300.0)
    sub = ap.add_subparsers(dest="cmd", required=True)
    pr = sub.add_parser("probe", help="knfsd over a bindfs mount, v3 and v4.2 kernel mounts")
    pr.add_argument("--fsid", type=int, default=101)
    rn = sub.add_parser("run", help="run a command in the guest")
    rn.add_argument("command", nargs="+")
    args = ap.parse_args(argv)

    try:
        kernel = resolve_kernel(args.kernel, args.cache)
        print(f"kernel: {kernel.source} ({kernel.release}, sha256 {kernel.sha256[:16]})")
        if args.cmd == "run":
            r = run_in_vm(kernel, args.command, timeout=args.timeout)
            sys.stdout.write(r.stdout)
            print(f"exit {r.returncode}, boot {r.boot_seconds} s, total {r.duration:.1f} s")
            return 124 if r.timed_out else (r.returncode or 0)
        with tempfile.TemporaryDirectory(prefix="nfsconf-probe-") as tmp:
            out = Path(tmp) / "probe.json"
            cmd = guest_python(
                "nfsconf.vm.guest", "probe", "--out", str(out),
                "--marker", uuid.uuid4().hex, "--fsid", str(args.fsid),
            )  # fmt: skip
            r = run_in_vm(kernel, cmd, timeout=args.timeout, rw_dirs=[Path(tmp)])
            if not out.exists():
                print(r.console[-3000:], file=sys.stderr)
                print(f"no probe result (exit {r.returncode})", file=sys.stderr)
                return 1
            res = json.loads(out.read_text())
        res["vm"] = {
            "boot_seconds": r.boot_seconds,
            "guest_boot_uptime": r.guest_boot_uptime,
            "duration": r.duration,
        }
        print(json.dumps(res, indent=1))
        return 0 if res.get("ok") else 1
    except (KernelError, VmError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
