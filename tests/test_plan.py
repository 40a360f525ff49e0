"""A run's options are declared once (nfsconf/plan.py): the command line, the pytest
plugin's options and the guest's options file are derived from RunOptions' fields, so what
one of them says the others read back unchanged. And a run's data never returns to a module
it had left (tests/chain_probe.py follows every call chain of a real run)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from nfsconf_cli import AS_ROOT

from nfsconf.cli import build_parser
from nfsconf.errors import UsageError
from nfsconf.plan import (
    TRANSPORTS,
    RunOptions,
    add_arguments,
    add_plugin_options,
    from_plugin,
    validate,
)

HERE = Path(__file__).resolve().parent
# "--" is argparse's end of options, never a value: argparse drops it even from --name=--
word = st.text("abcdefghij-_.0123456789", min_size=1, max_size=12).filter(lambda w: w != "--")
path = st.builds(lambda parts: Path("/", *parts), st.lists(word, min_size=1, max_size=3))


@st.composite
def plans(draw: st.DrawFn) -> RunOptions:
    opts = RunOptions(
        profiles=draw(st.lists(word, max_size=3)),
        transport=draw(st.sampled_from(TRANSPORTS)),
        k=draw(st.none() | word), out=draw(st.none() | path),
        timeout=draw(st.floats(0.5, 1e4, allow_nan=False)),
        fuzz_budget=draw(st.integers(0, 10**6)), fuzz_seed=draw(st.integers(0, 2**31)),
        kernels=draw(st.lists(word, max_size=2)), kernel_args=draw(st.lists(word, max_size=2)),
        jobs=draw(st.none() | st.integers(1, 64)), shard=draw(st.none() | word),
        claims=draw(st.none() | path),
        pynfs=draw(st.none() | word), pynfs_flags=draw(st.lists(word, max_size=3)),
        vm_timeout=draw(st.floats(1, 1e5, allow_nan=False)), strict=draw(st.booleans()))
    if draw(st.booleans()):
        opts.resume = opts.out = draw(path)
    return opts


def argv_of(opts: RunOptions) -> list[str]:
    """OPTS as `nfsconf run` arguments, each field through its own Flag."""
    argv: list[str] = []
    for f in fields(opts):
        flag, value = f.metadata["flag"], getattr(opts, f.name)
        if value is not None and value != RunOptions.__dataclass_fields__[f.name].default:
            argv += flag.argv(flag.option, value)
    return argv


@given(plans())
def test_the_command_line_reads_back_every_field(opts):
    args = build_parser().parse_args(["run", *argv_of(opts)])
    assert RunOptions.from_args(args) == opts


class _Group:  # pytest's option group, as add_plugin_options uses it
    def __init__(self, parser: argparse.ArgumentParser) -> None:
        self.addoption = parser.add_argument


@given(plans())
def test_the_plugin_reads_back_what_the_scenarios_need(opts):
    parser = argparse.ArgumentParser()
    add_plugin_options(_Group(parser))
    ns = parser.parse_args(opts.plugin_argv())
    got = from_plugin(lambda dest: getattr(ns, dest))
    for f in fields(opts):
        expected = getattr(opts, f.name) if f.metadata["flag"].plugin \
            else getattr(RunOptions(), f.name)
        assert getattr(got, f.name) == expected, f.name


@given(plans())
def test_the_guest_options_file_reads_back(opts):
    assert RunOptions.from_json(opts.to_json()) == opts
    json.loads(opts.to_json())  # a plain JSON document: the guest parses it with -S


def test_every_field_is_declared_with_its_flag():
    names = [f.metadata["flag"].name for f in fields(RunOptions)]
    assert len(names) == len(set(names))
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert {a.dest for a in parser._actions} >= {f.metadata["flag"].dest
                                                 for f in fields(RunOptions)}


def test_a_command_takes_part_of_the_options_and_keeps_the_rest_default():
    parser = argparse.ArgumentParser()
    add_arguments(parser, ("profiles", "timeout"), helps={"timeout": "per step"})
    # an argument of the command's own that happens to share a field's name is not it
    parser.add_argument("-j", "--jobs", type=int, default=8)
    opts = RunOptions.from_args(parser.parse_args(["--profile", "x", "--timeout", "5"]))
    assert opts == RunOptions(profiles=["x"], timeout=5.0)


def test_kernel_walk_runs_each_step_in_one_guest():
    """`kernel walk -j N` is the build's parallelism, not N guests per step."""
    args = build_parser().parse_args(["kernel", "walk", "--series", "s", "-j", "2"])
    assert args.jobs == 2 and RunOptions.from_args(args).jobs is None


@pytest.mark.parametrize("argv, message", [
    (["--jobs", "0"], "--jobs must be at least 1"),
    (["--kernel", "a", "--kernel", "b"], "several --kernel values need --transport knfsd"),
    (["--kernel-arg", "x=1"], "--kernel-arg needs --transport knfsd"),
    (["--pynfs", "/nowhere"], "--pynfs needs an NFS transport"),
    (["--timeout", "0"], "must be positive"),
    (["--fuzz-budget", "-1"], "--fuzz-budget must be 0 or more"),
    (["--shard", "3/2"], "K must be 1..N"),
    (["--shard", "x"], "give K/N"),
    (["--transport", "knfsd", "--jobs", "2", "--shard", "1/2"], "give one of them"),
    (["--scenarios", "/nowhere/scenarios"], "no such scenarios directory"),
])
def test_a_bad_plan_is_one_clear_error_before_anything_runs(argv, message):
    opts = RunOptions.from_args(build_parser().parse_args(["run", *argv]))
    with pytest.raises(UsageError, match=message):
        validate(opts)


def test_resume_and_another_out_are_refused():
    with pytest.raises(UsageError, match="drop --out"):
        RunOptions.from_args(build_parser().parse_args(
            ["run", "--resume", "/tmp/a", "--out", "/tmp/b"]))


def _revisits(*argv: str) -> dict[str, int]:
    r = subprocess.run([sys.executable, str(HERE / "chain_probe.py"), *argv],
                       capture_output=True, text=True, timeout=900, cwd=HERE.parent)
    report = json.loads(r.stdout.splitlines()[-1])
    assert report["status"] == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return report["revisits"]


@AS_ROOT
def test_a_local_run_never_returns_to_a_module_it_left(tmp_path):
    """`nfsconf run` through the plugin, the labs, servers, restarts and NFS-less cells."""
    assert _revisits("run", "--profile", "ref-stable", "--profile", "bindfs", "-k",
                     "ENC-TYPE or RESTART or DEC-COLD or FUZZ", "--fuzz-budget", "5",
                     "--out", str(tmp_path / "run")) == {}


@pytest.mark.vm
@AS_ROOT
def test_a_knfsd_run_never_returns_to_a_module_it_left(tmp_path):
    """The host's side of the knfsd lane: service, lane, kernels, engine, results."""
    assert _revisits("run", "--transport", "knfsd", "--kernel", "uml:debian", "--profile",
                     "ref-stable", "-k", "ENC-TYPE", "--out", str(tmp_path / "run")) == {}
