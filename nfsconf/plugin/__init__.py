"""The nfsconf pytest plugin: profile and transport parametrization, the lab and cell
fixtures, and one results.jsonl record per scenario x profile x transport.

Loaded by `nfsconf run` with `-p nfsconf.plugin` (and by scenarios/conftest.py for plain
pytest). This module only declares the options and registers the plugin's one state
object (state.NfsconfRun, whose hooks are its methods); the fixtures are in fixtures.py,
what a cell gathers and the records it becomes in cells.py."""

from __future__ import annotations

import pytest

from nfsconf.plan import add_plugin_options
from nfsconf.plugin.fixtures import cell, evidence, lab, options
from nfsconf.plugin.state import STATE, NfsconfRun

__all__ = ["cell", "evidence", "lab", "options"]


def pytest_addoption(parser: pytest.Parser) -> None:
    # the same options as `nfsconf run`'s, spelled --nfsconf-NAME (plan.RunOptions)
    add_plugin_options(parser.getgroup("nfsconf"))


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
