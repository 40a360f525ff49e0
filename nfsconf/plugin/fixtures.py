"""The fixtures scenarios use: `cell` (nfsconf/scenario.py) over a `lab` over `evidence`,
and `options`, the run's plan. A cell whose declared needs are unmet (nfsconf/requires.py)
is skipped at collection (state.py), so it never reaches these: it mounts nothing."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from nfsconf.evidence import Evidence
from nfsconf.lab import Lab
from nfsconf.plan import RunOptions
from nfsconf.plugin import cells
from nfsconf.plugin.state import STATE
from nfsconf.scenario import Cell
from nfsconf.servers.profile import Profile
from nfsconf.servers.refserver import read_trace


@pytest.fixture
def options(request: pytest.FixtureRequest) -> RunOptions:
    """The run's options (fuzz seed and budget, pynfs, out ...): what `nfsconf run` was
    given, or plain pytest's --nfsconf-* options."""
    return request.config.stash[STATE].options


@pytest.fixture
def evidence(request: pytest.FixtureRequest) -> Evidence:
    return cells.of(request.node).evidence


@pytest.fixture
def lab(request: pytest.FixtureRequest, profile: Profile, transport_name: str,
        evidence: Evidence) -> Iterator[Lab]:
    context = request.config.stash[STATE].context
    the_lab = Lab(profile, transport_name, knfsd=context.knfsd)
    context.labs.add(the_lab)  # from before it mounts: an interrupted start is stopped too
    the_lab.start()
    cells.of(request.node).labs.append(the_lab)
    evidence.note("server_pid", the_lab.server.pid if the_lab.server else None)
    try:
        yield the_lab
    finally:
        log_tail = the_lab.server.log_tail() if the_lab.server else ""
        trace = read_trace(the_lab.trace_path)
        if trace.tail:  # what the kernel asked the reference server and what it answered
            evidence.note("trace_tail", trace.tail)
        if trace.exceptions:  # a bug of ours: the cell's verdict cannot be trusted
            evidence.note("server_exceptions", trace.exceptions)
        notes = the_lab.stop()
        context.labs.discard(the_lab)
        if notes:
            evidence.note("teardown", notes)
            evidence.note("server_log", log_tail)
        evidence.note("timings", {k: round(v, 4) for k, v in the_lab.timings.items()})


@pytest.fixture
def cell(lab: Lab, evidence: Evidence) -> Cell:
    """The scenario API (nfsconf/scenario.py): the lab, with every encode and decode
    recorded in the cell's evidence."""
    return Cell(lab, evidence)
