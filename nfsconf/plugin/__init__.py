"""The nfsconf pytest plugin: profile and transport parametrization, the lab and cell
fixtures, and one results.jsonl record per scenario x profile x transport.

Loaded by `nfsconf run` with `-p nfsconf.plugin` (and by scenarios/conftest.py for plain
pytest). This module only declares the options and registers the plugin's one state
object (state.NfsconfRun, whose hooks are its methods); the fixtures are in fixtures.py,
what a cell gathers and the records it becomes in cells.py."""

from __future__ import annotations

import pytest

from nfsconf.plugin.fixtures import cell, evidence, lab, options
from nfsconf.plugin.state import STATE, NfsconfRun
from nfsconf.run import TRANSPORTS, RunOptions

__all__ = ["cell", "evidence", "lab", "options"]
_DEFAULTS = RunOptions()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("nfsconf")
    group.addoption("--nfsconf-profile", action="append", default=[],
                    help="profile name or TOML file (repeatable; default: installed built-ins)")
    group.addoption("--nfsconf-transport", default=_DEFAULTS.transport, choices=TRANSPORTS)
    group.addoption("--nfsconf-out", default=None, help="directory for results.jsonl")
    group.addoption("--nfsconf-fuzz-seed", type=int, default=_DEFAULTS.fuzz_seed,
                    help=f"seed of the fuzz scenarios (default {_DEFAULTS.fuzz_seed})")
    group.addoption("--nfsconf-fuzz-budget", type=int, default=_DEFAULTS.fuzz_budget,
                    help=f"mutated handles per fuzz scenario (default {_DEFAULTS.fuzz_budget})")
    group.addoption("--nfsconf-timeout", type=float, default=_DEFAULTS.timeout,
                    help=f"time limit of one scenario in seconds (default {_DEFAULTS.timeout:g})")
    group.addoption("--nfsconf-resume", action="store_true",
                    help="skip every scenario results.jsonl in --nfsconf-out already records")
    group.addoption("--nfsconf-shard", default=None, metavar="K/N",
                    help="only part K of N of the (profile, scenario) pairs")
    group.addoption("--nfsconf-pynfs", default=None, metavar="DIR",
                    help="a built pynfs tree (nfsconf.pynfs.prepare) to run on NFS exports")
    group.addoption("--nfsconf-pynfs-flag", action="append", default=[], metavar="FLAG",
                    help="pynfs flag to run (repeatable; default: the file-handle ones)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "scenario(id, level, claim=None): conformance scenario")
    state = NfsconfRun(config)
    config.stash[STATE] = state
    config.pluginmanager.register(state, "nfsconf-run")


def pytest_unconfigure(config: pytest.Config) -> None:
    state = config.stash.get(STATE, None)
    if state is not None:
        state.close()
        config.pluginmanager.unregister(state)
