"""Input for tests/test_knfsd.py: the suite's own process dies in a cell (as a client
library's segfault would), then a normal cell."""

import os
import signal

import pytest


@pytest.mark.scenario("SUITE-SEGV", "MUST")
def test_suite_process_dies(cell):
    cell.obj("d0/f1")
    os.kill(os.getpid(), signal.SIGSEGV)


@pytest.mark.scenario("AFTER-SEGV", "MUST")
def test_next_cell_runs(cell):
    obj = cell.obj("d0/f2")
    with cell.pinned(obj):
        cell.encode(obj, "file")
        assert cell.decode(obj, "warm") == "same"
