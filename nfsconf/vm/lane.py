"""The knfsd lane: the suite runs inside a guest booted with the kernel under test, by its
engine (qemu under TCG for a bzImage, User-Mode Linux for an ARCH=um kernel: vm/engine.py).

The guest sees the host's root (9p or hostfs), so it runs this very venv: it brings up knfsd
with a tmpfs pseudo-root, puts every lab under that root (so NFSv4 reaches it), and runs
the suite with the run service (`run_here`), writing results into the run directory, which
the host shares writable.

A kernel under test may crash. The guest boots with every kind of kernel trouble turned
into a panic (console.PANIC_ON_TROUBLE), so an oops, a hung task or a soft lockup ends the
VM; the host then records the cell that was running (running.json) as FAIL with the
kernel's own text, boots again, and the resumed guest goes on with the next cell — as
kvm-xfstests and kdevops do.

Host: run_lane(RunOptions). Guest: `python -m nfsconf.vm.lane OPTIONS.json`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shlex
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nfsconf import claims
from nfsconf.errors import LaneError, NfsconfError, UsageError
from nfsconf.plan import RunContext, RunOptions
from nfsconf.report.results import (
    PLANNED,
    RUNNING,
    Result,
    ResultsWriter,
    read_results,
    write_json,
)
from nfsconf.run import (
    RunOutcome,
    default_out,
    finish,
    planned_nodes,
    preflight,
    profiles_of,
    warm_scenarios,
)
from nfsconf.vm.console import PANIC_ON_TROUBLE, KernelCrash, kernel_crash

if TYPE_CHECKING:  # the guest imports this module too: no qemu supervision (psutil) for it
    from nfsconf.vm.kernels import Kernel
    from nfsconf.vm.runner import VmResult

OPTIONS = "lane.json"
VM_RECORDS = "vm.jsonl"
GUEST_MARK = "nfsconf guest:"  # guest log lines naming the moments `bench vm` reports


def run_lane(opts: RunOptions, tag: str = "", cancel: threading.Event | None = None,
             kernel: Kernel | None = None) -> RunOutcome:
    """Boot the kernel under test and run OPTS in it, as often as crashes need. TAG prefixes
    every line (several kernels run side by side) and leaves the matrix to the caller;
    KERNEL: OPTS' kernel resolved already (the guests of a split matrix share it)."""
    def say(text: str) -> None:
        print(f"[{tag}] {text}" if tag else text, flush=True)

    from nfsconf.lab import TIME_SCALE
    from nfsconf.vm.engine import engine_for
    from nfsconf.vm.kernels import default_cache_dir, resolve_kernel
    from nfsconf.vm.pack import packs, unpack_script
    from nfsconf.vm.runner import VmBootError, VmError, guest_python, run_in_vm

    out = Path(opts.out or default_out("knfsd")).resolve()
    if opts.resume and not (out / "results.jsonl").exists():
        raise UsageError(f"{out} holds no run to resume (no results.jsonl)")
    if not opts.resume and (out / "results.jsonl").exists():
        raise UsageError(f"{out} already holds a run: give another --out, or --resume {out}")
    if opts.profiles or not opts.resume:  # resuming, the guest takes the run's own
        profiles_of(opts.profiles)
    preflight()
    kernel = kernel or resolve_kernel(opts.kernel, default_cache_dir())
    engine = engine_for(kernel)
    out.mkdir(parents=True, exist_ok=True)
    say(f"knfsd: kernel {kernel.release} ({kernel.source}), sha256 {kernel.sha256[:16]}; "
        f"booting with {engine.description}")
    started = time.monotonic()
    guest = dataclasses.replace(
        opts, out=out, scenarios=Path(opts.scenarios).resolve(),
        jobs=1,  # a kernel crash is pinned on the one cell running.json names
        # the guest sees the host's root but not its working directory
        profiles=[str(Path(p).resolve()) if p.endswith(".toml") else p for p in opts.profiles])
    warm_scenarios(guest.scenarios)
    # the guest's Python reads its files from memory, not over 9p (vm/pack.py)
    pack = engine.pack_python and os.environ.get("NFSCONF_GUEST_PACK", "1") != "0"
    unpack = unpack_script(packs(default_cache_dir().parent / "guest", keep_off=[out])
                           if pack else [])
    boot = _next_boot(out) - 1
    while True:  # every crash records its cell, so each boot gets further than the last
        boot += 1
        guest.resume = out if opts.resume or (out / "results.jsonl").exists() else None
        (out / OPTIONS).write_text(guest.to_json())
        log, console = out / f"guest-{boot}.log", out / f"console-{boot}.log"
        inner = guest_python("nfsconf.vm.lane", str(out / OPTIONS), site=True)
        # after `env`: what the guest's environment record needs to name the kernel build
        inner[1:1] = [f"NFSCONF_KERNEL_IMAGE={kernel.image}",
                      f"NFSCONF_KERNEL_SHA256={kernel.sha256}",
                      f"NFSCONF_KERNEL_SOURCE={kernel.source}",
                      f"NFSCONF_KERNEL_ENGINE={engine.name}",
                      f"{TIME_SCALE}={engine.time_scale:g}",
                      "PYTHONUNBUFFERED=1"]  # its output goes to a file the host tails live
        mark = f"echo \"{GUEST_MARK} $1 at $(cut -d' ' -f1 /proc/uptime) s\""
        command = ["sh", "-c", f"mark() {{ {mark}; }}\n"
                   f"{{ mark shell; {unpack}\nmark unpacked; }} > {shlex.quote(str(log))} 2>&1\n"
                   f"exec {shlex.join(inner)} >> {shlex.quote(str(log))} 2>&1"]
        left = opts.vm_timeout - (time.monotonic() - started)
        if left <= 0:
            break
        stop = threading.Event()
        seen: dict[str, float] = {}
        tail = threading.Thread(target=_tail, args=(log, stop, time.monotonic(), say, seen),
                                daemon=True)
        tail.start()
        try:
            result = run_in_vm(kernel, command, timeout=left, memory="2G",
                               rw_dirs=[out, *([opts.claims] if opts.claims else [])],
                               boot_timeout=min(left, 300), console_path=console,
                               append=[*PANIC_ON_TROUBLE, *opts.kernel_args], cancel=cancel)
        except VmBootError as e:
            raise LaneError(f"kernel {kernel.release} did not boot: {e}") from e
        except VmError as e:
            raise LaneError(str(e)) from e
        finally:
            stop.set()
            tail.join()
        if result.failed_boot:
            say(f"knfsd: VM {boot}: the kernel panicked before the guest command "
                f"({result.failed_boot}; {console.name}.failed-boot) and was booted again")
        say(f"knfsd: VM {boot} done in {result.duration:.1f} s (boot "
            f"{result.boot_seconds or 0:.1f} s), guest exit status {result.returncode}")
        if opts.claims:  # what this guest took is its plan: the cells it owes a record
            write_json(out / PLANNED, claims.held(opts.claims, out.name))
        crash = kernel_crash(console.read_text(errors="replace"))
        _record_boot(out, boot, result, crash, seen.get("first_result"), guest_marks(log))
        if crash is not None:
            cell = _record_crash(out, crash, console)
            if cell is None:
                raise LaneError(f"kernel {crash.kind} outside any scenario (knfsd set-up?): "
                                f"{crash.summary()}; console: {console}")
            if not _cells_left(out, opts.claims):
                say(f"knfsd: kernel {crash.kind} in {cell}, the last cell: {crash.summary()}")
                break
            say(f"knfsd: kernel {crash.kind} in {cell}: {crash.summary()}; booting again "
                "for the cells left")
            continue
        if result.timed_out:
            _record_running(out, "ERROR", f"the VM run exceeded --vm-timeout "
                                          f"{opts.vm_timeout:g} s and was powered off", {})
            break
        died = _killed_by(result.returncode)
        if died is not None and (out / RUNNING).exists():
            # the suite's own process died in a cell (a client library's segfault on what
            # the kernel answered): that cell cannot be judged, the others can
            cell = _record_running(out, "ERROR", f"the suite's process in the guest died of "
                                                 f"{died} in this cell; {log.name} has its "
                                                 f"last words", {"guest_log": str(log)})
            if cell is not None and _cells_left(out, opts.claims):
                say(f"knfsd: the guest's Python died of {died} in {cell}; booting again for "
                    "the cells left")
                continue
            break
        if result.returncode == 2 and not _has_results(out):  # refused before any cell
            raise LaneError(f"the guest could not run the suite:\n{_last_lines(log)}")
        break
    return finish(out, show=not tag, views=_views_stale(out))


def _views_stale(out: Path) -> bool:
    """Whether the guest's views miss results: it wrote them after its last result, so
    they are current unless it never got to them or the host recorded a cell since (a
    crash, a timeout). Writing them again costs a second a guest on the host."""
    try:
        return (out / "matrix.txt").stat().st_mtime_ns < (out / "results.jsonl").stat().st_mtime_ns
    except FileNotFoundError:
        return True


def _killed_by(status: int) -> str | None:
    """The signal a guest command's exit status says it died of (a shell's 128 + N)."""
    if 128 < status < 128 + 65:
        try:
            return signal.Signals(status - 128).name
        except ValueError:
            return f"signal {status - 128}"
    return None


def _record_boot(out: Path, boot: int, result: VmResult, crash: KernelCrash | None,
                 first_result: float | None, marks: dict[str, float]) -> None:
    """One line per boot in vm.jsonl: the engine's command line, how the boot ended, and when
    things happened (host seconds since the VM started; guest marks in guest uptime)."""
    rec = {"boot": boot, "engine": result.engine, "argv": result.argv,
           "boot_seconds": result.boot_seconds,
           "guest_boot_uptime": result.guest_boot_uptime, "seconds": round(result.duration, 1),
           "exit": result.returncode, "timed_out": result.timed_out,
           "first_result": first_result, "guest_marks": marks,
           "failed_boot": result.failed_boot,
           "crash": crash.summary() if crash else None}
    with open(out / VM_RECORDS, "a") as f:
        f.write(json.dumps(rec) + "\n")


def _next_boot(out: Path) -> int:
    """Boots of a resumed run go on numbering after the ones already in the directory."""
    done = [int(p.stem.split("-")[1]) for p in out.glob("console-*.log")
            if p.stem.split("-")[1].isdigit()]
    return max(done, default=0) + 1


def _record_crash(out: Path, crash: KernelCrash, console: Path) -> str | None:
    evidence = {"kernel_crash": {"kind": crash.kind, "title": crash.title, "rip": crash.rip,
                                 "trace": crash.trace, "lines": crash.lines},
                "console": str(console)}
    return _record_running(out, "FAIL", f"kernel {crash.kind}: {crash.summary()}"[:300],
                           evidence)


def _record_running(out: Path, verdict: str, reason: str, evidence: dict) -> str | None:
    """Write the record of the cell the guest was running when the VM ended."""
    try:
        cell = json.loads((out / RUNNING).read_text())
    except (OSError, ValueError):
        return None
    writer = ResultsWriter(out / "results.jsonl")
    writer.write(Result(**cell, verdict=verdict, reason=reason, evidence=evidence))
    writer.close()
    (out / RUNNING).unlink(missing_ok=True)
    where = cell["profile"] if cell["transport"] == "local" else \
        f"{cell['profile']} [{cell['transport']}]"
    return f"{cell['id']}/{cell['variant']} {where}" if cell["variant"] else \
        f"{cell['id']} {where}"


def _cells_left(out: Path, claims_dir: Path | None = None) -> bool:
    """Whether the run planned cells it has no record of yet (unknown: assume so); a guest
    of a split matrix also has the cells no guest took yet."""
    if claims_dir is not None and claims.unclaimed(claims_dir):
        return True
    planned = planned_nodes(out)
    if not planned:
        return True
    _, results = read_results(out / "results.jsonl")
    return bool(set(planned) - {r.node for r in results})


def _has_results(out: Path) -> bool:
    path = out / "results.jsonl"
    return path.exists() and bool(read_results(path)[1])


def _last_lines(path: Path, n: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no guest output)"


def guest_marks(log: Path) -> dict[str, float]:
    """The guest's marks (guest_mark) in its log: event -> guest uptime in seconds."""
    marks: dict[str, float] = {}
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return marks
    for line in lines:
        if line.startswith(f"{GUEST_MARK} knfsd steps "):
            with contextlib.suppress(ValueError):
                for step, seconds in json.loads(line.split(" steps ", 1)[1]).items():
                    marks[f"knfsd:{step}"] = float(seconds)
        elif line.startswith(GUEST_MARK):
            event, _, at = line[len(GUEST_MARK):].strip().partition(" at ")
            with contextlib.suppress(ValueError):
                marks.setdefault(event, float(at.removesuffix(" s")))
    return marks


def _tail(path: Path, stop: threading.Event, started: float,
          say: Callable[[str], None], seen: dict[str, float]) -> None:
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
                say(line.rstrip("\n"))
                if first and line.startswith("["):
                    first = False
                    seen["first_result"] = round(time.monotonic() - started, 2)
                    say(f"knfsd: first result {seen['first_result']:.1f} s after "
                        "the VM started")
            elif stop.is_set():
                return
            else:
                time.sleep(0.2)


# --- in the guest -------------------------------------------------------------------------
def guest_mark(event: str) -> None:
    """A line of the guest's log: EVENT at the guest kernel's uptime, for `bench vm`."""
    print(f"{GUEST_MARK} {event} at {_uptime():.2f} s", flush=True)


def _uptime() -> float:
    try:
        return float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return -1.0


def guest_main(argv: list[str]) -> int:
    import tempfile

    from nfsconf.exporters.knfsd import GuestSetupError, load_modules, start_knfsd
    from nfsconf.mounttable import release_fusectl
    from nfsconf.run import run_here

    guest_mark("python")
    opts = RunOptions.from_json(Path(argv[0]).read_text())
    started: dict[str, Any] = {}

    def knfsd_up() -> None:
        try:
            load_modules(("fuse", "nfsd", "nfs", "nfsv3", "nfsv4"))
            # the daemons come up while the first cells (local ones) run: the first knfsd
            # lab waits for them
            started["knfsd"] = start_knfsd(background=True)
        except GuestSetupError as e:
            started["error"] = e

    # the modules and the pseudo-root while the scenarios' imports take the CPU
    up = threading.Thread(target=knfsd_up)
    up.start()
    import pytest  # noqa: F401

    import nfsconf.plugin  # noqa: F401

    up.join()
    if "error" in started:
        print(f"nfsconf: error: {started['error']}", file=sys.stderr)
        return 2
    knfsd = started["knfsd"]
    guest_mark("pseudo-root")
    try:
        labs = knfsd.pseudo / "labs"  # NFSv4 reaches the labs below the pseudo-root
        labs.mkdir(exist_ok=True)
        os.environ.update(TMPDIR=str(labs))
        tempfile.tempdir = None  # take the new TMPDIR
        guest_mark("run")
        status = run_here(opts, context=RunContext(knfsd=knfsd)).exit_status
        knfsd.wait()  # a knfsd that never came up fails the run, whatever the cells said
        # when the daemons served (they came up beside the first cells), for `bench vm`
        print(f"{GUEST_MARK} knfsd at {knfsd.serving_since or -1:.2f} s", flush=True)
        print(f"{GUEST_MARK} knfsd steps {json.dumps(knfsd.timings)}", flush=True)
        return status
    except GuestSetupError as e:
        print(f"nfsconf: error: {e}", file=sys.stderr)
        return 2
    except NfsconfError as e:
        print(f"nfsconf: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    finally:
        release_fusectl()  # before the pseudo-root goes: nothing of ours may keep it busy
        try:
            knfsd.stop()
        except GuestSetupError as e:
            print(f"nfsconf: warning: {e}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(guest_main(sys.argv[1:]))
