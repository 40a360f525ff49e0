"""The preconditions in nfsconf/requires.py: declared needs are judged from the profile and
transport alone, in the declared order, and a scenario cannot declare a need nobody checks."""

import pytest

from nfsconf import requires
from nfsconf.requires import Setting, Unsupported, unmet
from nfsconf.scenario import scenario
from nfsconf.servers.builtin import find_profile

BINDFS = find_profile("bindfs")
REF = find_profile("ref-stable")
SQUASH = find_profile("squashfuse")


def test_where_comes_before_every_need():
    reason = unmet(Setting(BINDFS, "local"), "nfs", ("refserver",))
    assert reason is not None and reason.startswith("NFS wire check")
    reason = unmet(Setting(BINDFS, "knfsd"), "local", ("refserver",))
    assert reason is not None and reason.startswith("exportfs-level check")


def test_needs_are_judged_in_the_declared_order():
    setting = Setting(SQUASH, "local")
    assert SQUASH.refserver is None and not SQUASH.writable
    assert unmet(setting, "any", ("refserver", "writable")).startswith("needs the reference")
    assert unmet(setting, "any", ("writable", "refserver")).startswith(
        "profile squashfuse serves a read-only")


def test_a_met_need_lets_the_cell_run():
    assert unmet(Setting(REF, "local"), "any", ("refserver", "writable")) is None
    assert unmet(Setting(REF, "knfsd"), "nfs", ("kernel_client",)) is None
    assert unmet(Setting(REF, "ganesha"), "nfs", ("kernel_client",)) == \
        requires.KERNEL_CLIENT_ONLY_IN_VM
    assert unmet(Setting(REF, "knfsd", pynfs=False), "nfs", ("pynfs",)).startswith("pynfs not")
    assert unmet(Setting(REF, "knfsd", pynfs=True), "nfs", ("pynfs",)) is None


def test_require_raises_the_reason():
    requires.require(None)
    with pytest.raises(Unsupported, match="no hard links"):
        requires.require("no hard links")


def test_a_need_nobody_checks_is_refused_at_import():
    with pytest.raises(ValueError, match="unknown needs"):
        scenario("X", "MUST", needs=("refsever",))


def test_lookup_handle_is_the_first_declared_need():
    mark = scenario("X", "MUST", lookup_handle=True, needs=("writable",))
    assert mark.kwargs["needs"] == ("lookup_handle", "writable")
