"""Chaos: real runs with servers killed and stopped at random points; nothing may leak."""

import os

import pytest

from nfsconf.chaos import chaos

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for FUSE mounts")


def test_short_chaos_is_clean():
    report = chaos(0, ["bindfs", "bindfs-noforget"], seed=5, timeout=4, progress=False, runs=3)
    assert report.runs == 3
    assert report.scenarios_finished > 0
    # every run's first strike waits for a server and hits it
    assert report.actions.get("sigkill-server", 0) + report.actions.get("sigstop-server", 0) >= 3
    assert report.clean, report.problems
