"""The run service: `run(RunOptions)` runs a suite and returns its outcome and directory.

`nfsconf run` and `nfsconf certify` call it. The local and Ganesha transports run here
(run.run_here); the knfsd transport boots the kernel under test and runs the same suite in
the guest (vm/lane.py), which calls run_here there.
"""

from __future__ import annotations

from nfsconf.errors import UsageError
from nfsconf.run import RunOptions, RunOutcome, run_here

TRANSPORTS = ("local", "ganesha", "knfsd")


def run(opts: RunOptions) -> RunOutcome:
    if opts.transport not in TRANSPORTS:
        raise UsageError(f"unknown transport {opts.transport!r} ({', '.join(TRANSPORTS)})")
    if opts.transport == "knfsd":
        from nfsconf.vm.lane import run_lane

        return run_lane(opts)
    return run_here(opts)
