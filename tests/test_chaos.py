"""Chaos: real runs with servers killed and stopped at random points; nothing may leak."""

import os

import pytest

from nfsconf.chaos import chaos

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for FUSE mounts")


def test_short_chaos_is_clean():
    report = chaos(25, ["bindfs", "bindfs-noforget"], seed=5, timeout=4, progress=False)
    assert report.runs >= 2
    assert report.scenarios_finished > 0
    assert report.actions.get("sigkill-server", 0) + report.actions.get("sigstop-server", 0) > 0
    assert report.clean, report.problems
