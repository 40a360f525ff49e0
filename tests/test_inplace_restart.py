"""A command profile's restart without unmount ([restart]) on the host kernel: the vendor
example (tests/data/profiles/vendor-lh.toml) is restarted both ways and the kernel shows the
same mount, a new serving process; restart commands that do not do what they say (remount,
leave the old server serving, leave nobody serving) are caught from the kernel, not
believed."""

import os
import tomllib
from pathlib import Path

import pytest
from nfsconf_cli import AS_ROOT

from nfsconf.lab import Lab
from nfsconf.mounttable import fuse_mount_at
from nfsconf.process import running as alive
from nfsconf.requires import Unsupported
from nfsconf.servers.inplace import InPlaceError
from nfsconf.servers.profile import load_profile_file, profile_from_dict

PROFILES = Path(__file__).resolve().parent / "data" / "profiles"
VENDOR = PROFILES / "vendor-lh.toml"


def _vendor(**restart: list[str] | str) -> object:
    """vendor-lh with other [restart] commands and a short timeout."""
    data = tomllib.loads(VENDOR.read_text())
    data["restart"] = restart
    data["mount_timeout"] = 3
    return profile_from_dict(data, "test", PROFILES)


@AS_ROOT
@pytest.mark.parametrize("how", ["handover", "sigkill"])
def test_vendor_profile_restarts_in_place(how):
    lab = Lab(load_profile_file(VENDOR)).start()
    try:
        before = fuse_mount_at(lab.mnt)
        old = lab.server.pid
        done = lab.restart_in_place(how)
        assert (done.old_pid, done.mount_id, done.connection) == (old, before.mount_id,
                                                                  before.connection)
        assert done.new_pid == lab.server.pid != old and not alive(old)
        assert done.stopped_lookup_waited >= 0.05  # the stop held a LOOKUP (the least hold)
        assert lab.obj("d0/f1").identity.marker == lab.markers["d0/f1"]
        again = lab.restart_in_place("sigkill" if how == "handover" else "handover")
        assert again.old_pid == done.new_pid and again.mount_id == before.mount_id
    finally:
        notes = lab.stop()
    # the last instance quit the fd holder it inherited: nothing had to be forced
    assert not [n for n in notes if "left running" in n], notes


@AS_ROOT
def test_a_profile_without_the_command_is_not_restarted():
    data = tomllib.loads(VENDOR.read_text())
    del data["restart"]["takeover"]
    lab = Lab(profile_from_dict(data, "test", PROFILES)).start()
    try:
        old = lab.server.pid
        with pytest.raises(Unsupported, match="declares no restart.takeover command"):
            lab.restart_in_place("sigkill")
        assert lab.server.pid == old and alive(old)
    finally:
        lab.stop()


@AS_ROOT
@pytest.mark.parametrize("how,restart,words", [
    # "takeover" that mounts anew: another mount ID, another connection, or (looked at
    # before the successor mounted) none at all: either way an unmount, named as one
    ("sigkill", {"takeover": ["sh", "-c", "umount -l {mountpoint}; exec "
                              f"{PROFILES / 'nfsconf-refserver'} {{source}} {{mountpoint}} "
                              "--state-dir={work}/state"]},
     "the restart unmounted and mounted again|that is an unmount, not a restart in place"),
    # a successor that never asks the old server to leave: the old one serves on
    ("handover", {"handover": ["sleep", "60"]}, "did not exit within"),
    # nobody takes the connection over
    ("sigkill", {"takeover": ["sleep", "60"]}, "nobody answered a LOOKUP"),
])
def test_restart_commands_are_checked_by_the_kernel(how, restart, words):
    lab = Lab(_vendor(**restart)).start()
    try:
        with pytest.raises(InPlaceError, match=words):
            lab.restart_in_place(how)
    finally:
        lab.stop()
    assert fuse_mount_at(lab.mnt) is None and not os.path.exists(lab.root)
