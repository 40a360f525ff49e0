"""Mount life cycle against real servers: whatever the server does, nothing stays mounted
and no process stays behind."""

import errno
import os
import signal
import subprocess
import time

import psutil
import pytest

from nfsconf.lab import Lab
from nfsconf.mounttable import MountError, fuse_mount_at
from nfsconf.servers.builtin import find_profile
from nfsconf.servers.profile import profile_from_dict

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for FUSE mounts")


def _gone(lab: Lab, pid: int) -> None:
    assert fuse_mount_at(lab.mnt) is None
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert not lab.root.exists()


def test_clean_stop():
    lab = Lab(find_profile("bindfs")).start()
    pid = lab.server.pid
    assert fuse_mount_at(lab.mnt) is not None
    assert lab.stop() == []  # nothing had to be forced
    _gone(lab, pid)


def test_interrupt_as_the_server_starts_leaves_nothing(monkeypatch):
    """SIGTERM (which the suite turns into KeyboardInterrupt, as Ctrl-C) landing just after
    the server's fork: the lab still ends it and unmounts whatever it mounted after."""
    import nfsconf.servers.mount as mount

    started = []
    real = subprocess.Popen

    def popen_then_sigterm(*args, **kwargs):
        proc = real(*args, **kwargs)
        started.append(proc.pid)
        os.kill(os.getpid(), signal.SIGTERM)  # its handler runs before this returns
        return proc

    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    monkeypatch.setattr(mount.subprocess, "Popen", popen_then_sigterm)
    lab = Lab(find_profile("bindfs"))
    try:
        with pytest.raises(KeyboardInterrupt):
            lab.start()
    finally:
        signal.signal(signal.SIGTERM, previous)
    (pid,) = started
    time.sleep(0.5)  # what an orphaned server would do meanwhile: mount
    _gone(lab, pid)


def test_killed_server_is_cleaned_up():
    lab = Lab(find_profile("bindfs")).start()
    pid = lab.server.pid
    os.kill(pid, signal.SIGKILL)
    lab.server.proc.wait()
    with pytest.raises(OSError) as dead:  # a name never looked up: the kernel must ask
        os.stat(lab.path("d0/never-looked-up"))
    assert dead.value.errno in (errno.ENOTCONN, errno.ECONNABORTED), dead.value
    lab.stop()
    _gone(lab, pid)


def test_stopped_server_is_aborted_and_cleaned_up():
    lab = Lab(find_profile("bindfs")).start()
    pid = lab.server.pid
    os.kill(pid, signal.SIGSTOP)
    while psutil.Process(pid).status() != psutil.STATUS_STOPPED:
        time.sleep(0.01)
    notes = lab.stop()
    assert any("aborted fuse connection" in n for n in notes), notes
    _gone(lab, pid)


def test_restart_remounts_same_source():
    with Lab(find_profile("bindfs")) as lab:
        first = lab.server.pid
        lab.restart()
        assert lab.server.pid != first and not psutil.pid_exists(first)
        assert fuse_mount_at(lab.mnt) is not None
        assert lab.path("d0/f1").read_text() == lab.markers["d0/f1"]


def test_server_that_never_mounts_gives_clear_error():
    profile = profile_from_dict({"name": "false", "mount": "false {source} {mountpoint}"}, "t")
    with pytest.raises(MountError, match="false exited with 1 before mounting"):
        Lab(profile).start()


def test_missing_binary_gives_clear_error():
    profile = profile_from_dict({"name": "x", "mount": "no-such-fuse-server {mountpoint}"}, "t")
    with pytest.raises(MountError, match="cannot start no-such-fuse-server"):
        Lab(profile).start()
