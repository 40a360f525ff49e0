"""The project's own tests. The session fails if any of them leaves a FUSE mount or a
process behind: the suite promises users the same."""

from __future__ import annotations

import os

import psutil
import pytest

from nfsconf.servers.mount import mounts

_START: set[tuple[int, str]] = set()


def _fuse_mounts() -> set[tuple[int, str]]:
    return {(m.mount_id, m.mountpoint) for m in mounts() if m.is_fuse}


def pytest_sessionstart(session: pytest.Session) -> None:
    _START.update(_fuse_mounts())


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    leaked_mounts = sorted(mp for _, mp in _fuse_mounts() - _START if "nfsconf" in mp)
    children = [p for p in psutil.Process(os.getpid()).children(recursive=True)
                if p.status() != psutil.STATUS_ZOMBIE]
    problems = [f"FUSE mount left behind: {mp}" for mp in leaked_mounts]
    problems += [f"process left running: pid {p.pid} {' '.join(p.cmdline())[:100]}"
                 for p in children]
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
