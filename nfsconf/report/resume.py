"""What `nfsconf run` records about itself, so that `nfsconf run --resume DIR` can finish a
run that was killed: the same profiles, -k and transport, on the same kernel, skipping every
scenario that already has its record."""

from __future__ import annotations

import argparse
import platform
from pathlib import Path
from typing import Any

from nfsconf.report.kernel import kernel_image
from nfsconf.report.results import ResultsError, load_run


def annotate_env(env: dict[str, Any], args: argparse.Namespace,
                 profile_specs: list[str]) -> dict[str, Any]:
    """Add to the env record the kernel image identity and the run's own arguments."""
    env["kernel_image"] = kernel_image()
    env["run"] = {"profiles": profile_specs, "k": args.k}
    if getattr(args, "resume", None):
        env["resumed"] = True
    return env


def resume_args(args: argparse.Namespace) -> None:
    """Point `args` at the run in args.resume, taking the profiles and -k it was started with
    unless given again. Refuses a run made on another kernel or transport: one results file
    describes one kernel."""
    out = Path(args.resume)
    run = load_run(out)
    if not run.envs:
        raise ResultsError(f"{run.path}: no env record: not the results of `nfsconf run`")
    if args.out and Path(args.out).resolve() != out.resolve():
        raise ResultsError("--resume DIR writes into DIR; drop --out")
    env, recorded = run.env, run.env.get("run") or {}
    if env.get("kernel") != platform.release():
        raise ResultsError(f"{out} was run on kernel {env.get('kernel')}, this is "
                           f"{platform.release()}: resume it on the kernel it started on")
    then = (env.get("kernel_image") or {}).get("build_id")
    now = kernel_image()["build_id"]
    if then and now and then != now:
        raise ResultsError(f"{out} was run on kernel build {then[:16]}, this is {now[:16]} "
                           "(same release, another build)")
    if env.get("transport") != args.transport:
        raise ResultsError(f"{out} was run with transport {env.get('transport')}; "
                           f"give --transport {env.get('transport')}")
    if not args.profile:
        args.profile = list(recorded.get("profiles") or env.get("profiles") or [])
    if args.k is None:
        args.k = recorded.get("k")
    args.out = str(out)
