"""The project's own tests. The session fails if any of them leaves a FUSE mount or a
process behind: the suite promises users the same."""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from nfsconf.mounttable import mounts

_START: set[tuple[int, str]] = set()
_WORKER_LEAKS: list[str] = []


def _fuse_mounts() -> set[tuple[int, str]]:
    return {(m.mount_id, m.mountpoint) for m in mounts() if m.is_fuse}


@pytest.hookimpl(tryfirst=True)  # before xdist's worker turns the marker into the node id
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`make test` runs two pytest-xdist workers. Every host test is in one group, run one
    after the other on one worker, so no two host tests share the host kernel's caches at
    once (one's drop_caches would reach the other's objects). A VM test has a kernel of its
    own: each is its own unit, on whichever worker is free (the longest first)."""
    for item in items:
        if not item.get_closest_marker("vm"):
            item.add_marker(pytest.mark.xdist_group("host"))
    # xdist hands units out in collection order: the host group and the long VM runs first
    items.sort(key=lambda item: (item.get_closest_marker("vm") is not None,
                                 -_LONG.get(Path(str(item.fspath)).name, 0)))


# the VM test files that take longest (make test's --durations): started first, so the
# other worker's queue is never left with one long test at the end
_LONG = {"test_lookup_handle_kernel.py": 5, "test_knfsd.py": 4, "test_kcidb.py": 3,
         "test_vendor_profiles.py": 2, "test_kernel_walk.py": 1}


def pytest_configure(config: pytest.Config) -> None:
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker:  # a worker's VMs keep their files (UML's uml_dir) in its own TMPDIR, which
        # tells its engine processes from the other worker's (nfsconf_cli.engine_processes)
        tmp = Path(tempfile.gettempdir()) / f"nfsconf-tests-{worker}"
        tmp.mkdir(exist_ok=True)
        os.environ["TMPDIR"] = str(tmp)
        tempfile.tempdir = None


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: object, error: object) -> None:
    _WORKER_LEAKS.extend(getattr(node, "workeroutput", {}).get("leaks", []))


def _controller(config: pytest.Config) -> bool:
    return config.pluginmanager.hasplugin("dsession")


def _worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def pytest_sessionstart(session: pytest.Session) -> None:
    _START.update(_fuse_mounts())


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    from nfsconf.fuse import spawner

    spawner.stop()  # the reference servers' fork server lives as long as its user
    if os.environ.get("PYTEST_XDIST_WORKER"):
        with contextlib.suppress(OSError):  # empty unless something was left in it
            Path(os.environ["TMPDIR"]).rmdir()
    config = session.config
    # mounts are the machine's: counted once, when every worker is done; processes are
    # each process's own: counted where they were started (the workers are xdist's)
    leaked_mounts = [] if _worker(config) else sorted(
        mp for _, mp in _fuse_mounts() - _START if "nfsconf" in mp)
    children = [] if _controller(config) else [
        p for p in psutil.Process(os.getpid()).children(recursive=True)
        if p.status() != psutil.STATUS_ZOMBIE]
    problems = [f"FUSE mount left behind: {mp}" for mp in leaked_mounts]
    problems += [f"process left running: pid {p.pid} {' '.join(p.cmdline())[:100]}"
                 for p in children]
    if _worker(config):  # the controller decides the exit status: tell it
        config.workeroutput["leaks"] = problems  # type: ignore[attr-defined]
        return
    problems += _WORKER_LEAKS
    if problems:
        print("\n" + "\n".join(problems))
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def requires_root() -> pytest.MarkDecorator:
    return pytest.mark.skipif(os.geteuid() != 0, reason="needs root for FUSE mounts")


@pytest.fixture
def ref_mounts(tmp_path):
    """Reference-server instances over tmp_path/src on tmp_path/mnt; at the end every one
    is stopped and must have left no mount, holder or server process."""
    from types import SimpleNamespace

    from nfsconf.fuse.control import RefServer

    src, mnt = tmp_path / "src", tmp_path / "mnt"
    src.mkdir()
    mnt.mkdir()
    servers: list[RefServer] = []

    def start(**knobs: object) -> RefServer:
        srv = RefServer(workdir=str(tmp_path / f"work{len(servers)}"))
        servers.append(srv)
        return srv.start(str(src), str(mnt), **knobs)

    yield SimpleNamespace(src=src, mnt=mnt, start=start, servers=servers)
    for srv in servers:
        srv.stop()
    assert [m for m in mounts() if m.mountpoint == str(mnt)] == [], "a mount survived the test"
    for srv in servers:
        assert srv.holder is None
        assert srv.proc is None or srv.proc.returncode is not None, "server still running"


@pytest.fixture
def tmpfs_dir(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of the test's own (tmpfs has no fh_to_parent and is not ext4): /dev/shm is
    not a tmpfs everywhere, e.g. in a chroot whose /dev is a plain bind mount."""
    d = tmp_path / "tmpfs"
    d.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m,mode=0755", "nfsconf-test",
                    str(d)], check=True)
    try:
        yield d
    finally:
        subprocess.run(["umount", str(d)], check=True)
