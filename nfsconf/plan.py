"""A run's plan: its options, declared once, and what one run shares besides them.

Each RunOptions field carries its Flag: how `nfsconf run` (and the commands that take a part
of its options: certify, kernel walk) spell it, and whether the pytest plugin takes it as
`--nfsconf-NAME`. argparse's arguments, the plugin's options, the argv `run_here` hands
pytest and the guest's options file are all derived from these fields, so an option is one
edit here. `validate` checks a plan once, on the host, before anything starts.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterable
from dataclasses import Field, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import nfsconf
from nfsconf import shard
from nfsconf.errors import UsageError

TRANSPORTS = ("local", "ganesha", "knfsd")
SCENARIOS = Path(nfsconf.__file__).resolve().parent.parent / "scenarios"


def _comma_list(text: str) -> list[str]:
    return [part for part in text.split(",") if part]


@dataclass(frozen=True)
class Flag:
    """How a RunOptions field is given: NAME on the command line (`-k` for one letter),
    `--nfsconf-NAME` to the pytest plugin when PLUGIN."""

    name: str
    help: str
    type: Callable[[str], Any] | None = None
    metavar: str | None = None
    choices: tuple[str, ...] | None = None
    repeat: bool = False  # repeatable: the field is the list of every value given
    switch: bool = False  # given or not: a bool
    plugin: bool = True  # the scenarios' side needs it (plain pytest takes it too)

    @property
    def option(self) -> str:
        return f"-{self.name}" if len(self.name) == 1 else f"--{self.name}"

    @property
    def dest(self) -> str:
        return self.name.replace("-", "_")

    @property
    def plugin_option(self) -> str:
        return f"--nfsconf-{self.name}"

    def argparse_kwargs(self, default: Any, help: str | None = None) -> dict[str, Any]:
        kw: dict[str, Any] = {"dest": self.dest, "help": help or self.help}
        if self.switch:
            return {**kw, "action": "store_true"}
        kw["default"] = [] if self.repeat else default
        if self.repeat:
            kw["action"] = "append"
        for key in ("type", "metavar", "choices"):
            if getattr(self, key) is not None:
                kw[key] = getattr(self, key)
        return kw

    def argv(self, option: str, value: Any) -> list[str]:
        """VALUE given back as OPTION's arguments: the inverse of the parse. Option and
        value are one word, so a value that starts with "-" is not taken for an option."""
        if self.switch:
            return [option] if value else []
        values = value if self.repeat else [value]
        glue = "" if len(option) == 2 else "="  # -kPATTERN, --name=VALUE
        return [f"{option}{glue}{','.join(v) if isinstance(v, list) else v}" for v in values]


def _opt(default: Any, flag: Flag) -> Any:
    if isinstance(default, list):
        return field(default_factory=list, metadata={"flag": flag})
    return field(default=default, metadata={"flag": flag})


@dataclass
class RunOptions:
    profiles: list[str] = _opt([], Flag(
        "profile", "built-in profile name or TOML file (repeatable; default: every installed "
                   "built-in)", metavar="NAME|FILE", repeat=True))
    transport: str = _opt("local", Flag(
        "transport", "where the FUSE mount is exported from (default %(default)s)",
        choices=TRANSPORTS))
    k: str | None = _opt(None, Flag(
        "k", "only scenarios matching (pytest -k)", metavar="PATTERN", plugin=False))
    out: Path | None = _opt(None, Flag(
        "out", "results directory (default reports/run-*)", type=Path, metavar="DIR"))
    resume: Path | None = _opt(None, Flag(
        "resume", "finish the killed run in DIR: same profiles and -k, only the scenarios it "
                  "has no record of", type=Path, metavar="DIR"))
    scenarios: Path = _opt(SCENARIOS, Flag(
        "scenarios", argparse.SUPPRESS, type=Path, plugin=False))
    timeout: float = _opt(120.0, Flag(
        "timeout", "time limit of one scenario; a server that stops answering is aborted and "
                   "its cell is ERROR (default %(default)g)", type=float, metavar="SECONDS"))
    fuzz_budget: int = _opt(200, Flag(
        "fuzz-budget", "mutated handles per fuzz scenario (default %(default)s)", type=int,
        metavar="N"))
    fuzz_seed: int = _opt(1, Flag(
        "fuzz-seed", "seed of the fuzz scenarios; the same seed replays them (default "
                     "%(default)s)", type=int, metavar="SEED"))
    kernels: list[str] = _opt([], Flag(
        "kernel", "knfsd: uml:debian[:SUITE] (Debian's User-Mode Linux, host speed), a UML "
                  "binary, a bzImage/vmlinuz with modules beside it, a built tree (x86 or um), "
                  "or debian:SUITE (a bzImage under qemu; default: Debian's current kernel); "
                  "repeatable: one guest per kernel, one report with a column per kernel",
        metavar="SPEC", repeat=True, plugin=False))
    kernel_args: list[str] = _opt([], Flag(
        "kernel-arg", "knfsd: one more kernel command-line parameter for the guest, e.g. "
                      "fuse.enable_uring=1; repeatable", metavar="ARG", repeat=True,
        plugin=False))
    jobs: int | None = _opt(None, Flag(
        "jobs", "local and ganesha: run N cells at a time (pytest-xdist); a drop_caches of "
                "one then reaches the others' objects, which can change verdicts that depend "
                "on the cache (volatile nodeids). knfsd: several --kernel values, N guests at "
                "a time; one kernel, its matrix shared by N guests (OUT/shard-K-of-N; each "
                "guest has its own kernel and caches). Default 1", type=int, metavar="N",
        plugin=False))
    shard: str | None = _opt(None, Flag(
        "shard", "run part K of N of the (profile, scenario) pairs; the parts' run "
                 "directories merge in report, diff and certify", metavar="K/N"))
    # the guests of a split matrix take its cells from this directory (claims.py); given
    # by the host to each guest, never on the command line
    claims: Path | None = _opt(None, Flag("claims", argparse.SUPPRESS, type=Path))
    pynfs: str | None = _opt(None, Flag(
        "pynfs", "a pynfs checkout: run its NFSv4.0/4.1 file-handle codes against every "
                 "export too, as cells PYNFS-<code>", metavar="DIR"))
    pynfs_flags: list[str] = _opt([], Flag(
        "pynfs-flags", "pynfs flags to run instead (comma-separated; 'all' for all)",
        type=_comma_list, metavar="FLAGS"))
    vm_timeout: float = _opt(3600.0, Flag(
        "vm-timeout", "knfsd: the whole VM run's limit; past it the VM is powered off "
                      "(default %(default)g)", type=float, metavar="SECONDS", plugin=False))
    strict: bool = _opt(False, Flag(
        "strict", "exit 1 when a MUST scenario fails (for CI gates)", switch=True,
        plugin=False))

    @property
    def kernel(self) -> str | None:
        """The kernel one guest boots (several are split into one run each)."""
        return self.kernels[0] if self.kernels else None

    # -- derived: argparse, the plugin, the guest's file -----------------------------------
    @classmethod
    def from_values(cls, get: Callable[[Flag], Any], flags: Iterable[Flag] | None = None
                    ) -> RunOptions:
        """The options from parsed flags: GET(flag) is the parsed value of each of FLAGS
        (default: every flag), the other fields keep their defaults."""
        wanted = set(flags) if flags is not None else None
        values = {f.name: get(_flag(f)) for f in fields(cls)
                  if wanted is None or _flag(f) in wanted}
        opts = cls(**values)
        if opts.resume is not None:
            if opts.out is not None and Path(opts.out).resolve() != Path(opts.resume).resolve():
                raise UsageError("--resume DIR writes into DIR; drop --out")
            opts.out = opts.resume
        return opts

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> RunOptions:
        """From a command's parsed arguments: the fields its add_arguments declared (a
        command's other arguments may share a name: kernel walk's -j is the build's)."""
        declared = set(getattr(args, _DECLARED, ()))
        given = [_flag(f) for f in fields(cls) if f.name in declared]
        return cls.from_values(lambda flag: getattr(args, flag.dest), given)

    def plugin_argv(self) -> list[str]:
        """The plugin's options that give these options to the scenarios' side."""
        argv: list[str] = []
        for f in fields(self):
            flag, value = _flag(f), getattr(self, f.name)
            if not flag.plugin or value is None or value == _default(f):
                continue
            if flag.dest == "out" and self.resume is not None:
                continue  # --nfsconf-resume DIR says it
            argv += flag.argv(flag.plugin_option, value)
        return argv

    def to_json(self) -> str:
        d = asdict(self)
        for f in fields(self):
            if isinstance(d[f.name], Path):
                d[f.name] = str(d[f.name])
        return json.dumps(d, indent=1)

    @classmethod
    def from_json(cls, text: str) -> RunOptions:
        d = json.loads(text)
        values = {}
        for f in fields(cls):
            if f.name in d:
                v = d[f.name]
                values[f.name] = Path(v) if v is not None and _flag(f).type is Path else v
        return cls(**values)


_DECLARED = "run_options_declared"  # where a parser keeps the fields add_arguments gave it


def _flag(f: Field[Any]) -> Flag:
    return f.metadata["flag"]


def _default(f: Field[Any]) -> Any:
    return f.default_factory() if callable(f.default_factory) else f.default


def add_arguments(parser: argparse.ArgumentParser, names: Iterable[str] | None = None,
                  helps: dict[str, str] | None = None) -> None:
    """RunOptions' flags (the fields NAMES, default all) as arguments of PARSER; HELPS
    words a field's help for this command."""
    by_name = {f.name: f for f in fields(RunOptions)}
    chosen = list(names if names is not None else by_name)
    for name in chosen:
        f = by_name[name]
        flag = _flag(f)
        parser.add_argument(flag.option, **flag.argparse_kwargs(
            _default(f), (helps or {}).get(name)))
    parser.set_defaults(**{_DECLARED: tuple(chosen)})


def add_plugin_options(group: Any) -> None:
    """The plugin's --nfsconf-NAME options (GROUP: pytest's option group)."""
    for f in fields(RunOptions):
        flag = _flag(f)
        if flag.plugin:
            kw = flag.argparse_kwargs(_default(f))
            kw["dest"] = f"nfsconf_{flag.dest}"
            group.addoption(flag.plugin_option, **kw)


def from_plugin(getoption: Callable[[str], Any]) -> RunOptions:
    """The options the plugin was given (GETOPTION: pytest's config.getoption)."""
    flags = [_flag(f) for f in fields(RunOptions) if _flag(f).plugin]
    return RunOptions.from_values(lambda flag: getoption(f"nfsconf_{flag.dest}"), flags)


def validate(opts: RunOptions) -> None:
    """Everything about a plan that can be known before it runs: one clear error."""
    if opts.transport not in TRANSPORTS:
        raise UsageError(f"unknown transport {opts.transport!r} ({', '.join(TRANSPORTS)})")
    knfsd = opts.transport == "knfsd"
    if len(opts.kernels) > 1 and not knfsd:
        raise UsageError("several --kernel values need --transport knfsd")
    if opts.kernel_args and not knfsd:
        raise UsageError("--kernel-arg needs --transport knfsd (the kernel the VM boots)")
    if opts.jobs is not None and opts.jobs < 1:
        raise UsageError("--jobs must be at least 1")
    if opts.timeout <= 0 or opts.vm_timeout <= 0:
        raise UsageError("--timeout and --vm-timeout must be positive (seconds)")
    if opts.fuzz_budget < 0:
        raise UsageError("--fuzz-budget must be 0 or more")
    if opts.pynfs and opts.transport == "local":
        raise UsageError("--pynfs needs an NFS transport (knfsd or ganesha)")
    if opts.shard:
        shard.parse(opts.shard)
        if knfsd and (opts.jobs or 1) > 1 and len(opts.kernels) <= 1:
            raise UsageError("--jobs N splits this kernel's matrix into N guests; --shard "
                             "K/N splits it over machines: give one of them")
    if not Path(opts.scenarios).exists():
        raise UsageError(f"{opts.scenarios}: no such scenarios directory or file")


@dataclass(eq=False)  # a pytest plugin object: hashed by identity
class RunContext:
    """What one run shares beyond its options, handed to the plugin as an object: the knfsd
    of the guest (its exporters serve the knfsd transports) and the labs alive now (a
    signal's unwinding or the plugin's close stops any a cell left)."""

    knfsd: Any = None  # exporters.knfsd.Knfsd
    labs: set[Any] = field(default_factory=set)  # lab.Lab
