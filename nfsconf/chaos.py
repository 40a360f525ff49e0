"""`nfsconf chaos`: repeat real runs while killing their FUSE servers at random points
(SIGKILL; SIGSTOP, left for the watchdog to abort; SIGTERM of the whole run) and count what
the suite must never do: leak a mount, leak a process, hang, or lose a result record."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from nfsconf import process
from nfsconf.mounttable import abort_connection, mounts, umount

ACTIONS = ("sigkill-server", "sigstop-server", "sigterm-run", "none")


@dataclass
class ChaosReport:
    runs: int = 0
    scenarios_finished: int = 0
    actions: dict[str, int] = field(default_factory=dict)
    leaked_mounts: int = 0
    leaked_processes: int = 0
    hung_runs: int = 0
    lost_records: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (self.leaked_mounts or self.leaked_processes or self.hung_runs
                    or self.lost_records)


def _servers_of(run: psutil.Process) -> list[psutil.Process]:
    """FUSE servers the run started: its descendants other than Python itself."""
    try:
        kids = run.children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    return [k for k in kids if _is_server(k)]


def _is_server(proc: psutil.Process) -> bool:
    try:
        return "python" not in (proc.name() or "")
    except psutil.NoSuchProcess:
        return False  # gone since the listing: nothing to kill


def _one_run(rng: random.Random, profiles: list[str], workdir: Path, timeout: float,
             report: ChaosReport) -> None:
    out = workdir / f"run{report.runs}"
    labs = out / "labs"
    labs.mkdir(parents=True)
    argv = [sys.executable, "-m", "nfsconf.cli", "run", "--out", str(out), "--timeout",
            str(timeout), "--fuzz-budget", "20"]
    for p in rng.sample(profiles, k=min(2, len(profiles))):
        argv += ["--profile", p]
    env = {**os.environ, "TMPDIR": str(labs)}
    log = out / "run.log"
    with open(log, "w") as logf:
        tree = process.ProcessTree(argv, stdout=logf, stderr=subprocess.STDOUT, env=env)
    proc = tree.proc
    run = psutil.Process(proc.pid)
    # the first strike comes early, so a run faster than the strike interval still meets one
    strike_at = time.monotonic() + rng.uniform(0.0, 0.5)
    deadline = time.monotonic() + 120 + timeout
    action = "none"
    first = True  # the first strike of a run waits for a server and hits it
    while proc.poll() is None:
        now = time.monotonic()
        if first and now >= strike_at:
            servers = _servers_of(run)
            if servers:
                first = False
                action = rng.choice(("sigkill-server", "sigstop-server"))
                rng.choice(servers).send_signal(
                    signal.SIGKILL if action == "sigkill-server" else signal.SIGSTOP)
                report.actions[action] = report.actions.get(action, 0) + 1
                strike_at = now + rng.uniform(0.3, 3.0)
        elif now >= strike_at:  # strike again and again, at random points of the run
            strike_at = now + rng.uniform(0.3, 3.0)
            action = rng.choices(ACTIONS, weights=(4, 3, 1, 2))[0]
            servers = _servers_of(run)
            if action == "sigterm-run":
                proc.send_signal(signal.SIGTERM)
            elif servers and action != "none":
                victim = rng.choice(servers)
                victim.send_signal(signal.SIGKILL if action == "sigkill-server"
                                   else signal.SIGSTOP)
            else:
                action = "none"
            report.actions[action] = report.actions.get(action, 0) + 1
        if now > deadline:
            report.hung_runs += 1
            report.problems.append(f"run {report.runs} hung after {action}; killed")
            try:
                tree.stop(grace=2)
            except process.ProcessTreeError as e:
                report.problems.append(f"run {report.runs}: {e}")
            break
        time.sleep(0.05)
    _account(report, out, labs, log.read_text(errors="replace"))
    report.runs += 1


def _account(report: ChaosReport, out: Path, labs: Path, text: str) -> None:
    leaked = [m for m in mounts() if m.mountpoint.startswith(str(labs))]
    report.leaked_mounts += len(leaked)
    report.problems += [f"leaked mount {m.mountpoint} ({m.fstype})" for m in leaked]
    for m in reversed(leaked):  # count it, then leave the machine as found all the same
        abort_connection(m.connection)
        umount(m.mountpoint, lazy=True)
    alive = [p for p in psutil.process_iter(["pid", "environ"])
             if _in_labs(p, labs)]
    report.leaked_processes += len(alive)
    report.problems += [f"leaked process {p.pid} {' '.join(p.cmdline())[:80]}" for p in alive]
    for p in alive:  # leave the machine as found even when the suite did not
        p.kill()
    printed = sum(1 for line in text.splitlines() if line.startswith("[") and "/" in line[:12])
    results = out / "results.jsonl"
    recorded = 0
    if results.exists():
        for line in results.read_text().splitlines():
            try:
                recorded += json.loads(line).get("kind") == "result"
            except json.JSONDecodeError:
                pass
    report.scenarios_finished += recorded
    if recorded < printed:
        report.lost_records += printed - recorded
        report.problems.append(f"run in {out}: {printed} scenarios printed, {recorded} recorded")


def _in_labs(p: psutil.Process, labs: Path) -> bool:
    try:
        return p.info["environ"] is not None and \
            p.info["environ"].get("TMPDIR") == str(labs)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def chaos(duration: float, profiles: list[str], seed: int, timeout: float = 10.0,
          progress: bool = True, runs: int | None = None) -> ChaosReport:
    """Runs until DURATION seconds have passed, or exactly RUNS runs when given."""
    rng = random.Random(seed)
    report = ChaosReport()
    end = time.monotonic() + duration
    with tempfile.TemporaryDirectory(prefix="nfsconf-chaos-") as work:
        while (report.runs < runs) if runs is not None else (time.monotonic() < end):
            _one_run(rng, profiles, Path(work), timeout, report)
            if progress:
                print(f"chaos: run {report.runs}, {report.scenarios_finished} scenarios, "
                      f"leaks {report.leaked_mounts} mounts / {report.leaked_processes} "
                      f"processes, hung {report.hung_runs}, lost {report.lost_records}",
                      flush=True)
    return report
