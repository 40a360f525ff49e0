"""Restart without unmount: graceful handover and SIGKILL + takeover of the live /dev/fuse fd,
requests in flight during the handover, and cleanup after a server dies mid-request."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from test_refserver_handles import decode, encode, same_object

from nfsconf.fuse import sysutil as su
from nfsconf.fuse.control import RefServer, RefServerError
from nfsconf.fuse.trace import trace_records
from nfsconf.transports import local

READER = """
import sys
try:
    with open(sys.argv[1], 'rb') as f:
        sys.stdout.write(f.read().decode())
except OSError as e:
    sys.stdout.write('ERR:' + str(e.errno))
"""


def drop_caches() -> None:
    os.sync()
    local.drop_caches()


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[SimpleNamespace]:
    src, mnt = tmp_path / "src", tmp_path / "mnt"
    (src / "dir").mkdir(parents=True)
    mnt.mkdir()
    (src / "file").write_bytes(b"marker:file")
    (src / "dir" / "inner").write_bytes(b"marker:dir/inner")
    servers: list[RefServer] = []
    readers: list[subprocess.Popen[bytes]] = []

    def start(**knobs: object) -> RefServer:
        srv = RefServer(workdir=str(tmp_path / f"work{len(servers)}"))
        servers.append(srv)
        return srv.start(str(src), str(mnt), **knobs)

    def reader(rel: str) -> subprocess.Popen[bytes]:
        p = subprocess.Popen([sys.executable, "-c", READER, str(mnt / rel)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        readers.append(p)
        return p

    yield SimpleNamespace(src=src, mnt=mnt, start=start, reader=reader)
    for srv in servers:
        srv.stop()
    for p in readers:  # a reader still blocked now means the mount was not torn down
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            pytest.fail("a reader stayed blocked after stop()")
    assert su.mounts_at(str(mnt)) == []
    for srv in servers:
        assert srv.holder is None
        assert all(_gone(pid) for pid in srv.pids)


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    with open(f"/proc/{pid}/stat") as f:  # a zombie of someone else's pid reuse is fine
        return f.read().split(") ")[1].startswith("Z")


def _wait_stalled(srv: RefServer, op: str = "READ", timeout: float = 10) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for r in trace_records(srv.trace_path):
            if r.get("op") == op and r.get("stalled"):
                return r
        time.sleep(0.05)
    raise AssertionError(f"no stalled {op} in the trace")


def _takeovers(srv: RefServer) -> list[dict]:
    return [r for r in trace_records(srv.trace_path) if r.get("event") == "takeover"]


@pytest.mark.parametrize("how", ["live_restart", "kill_and_takeover"])
def test_blocked_reader_gets_its_data_across_the_handover(lab, how: str) -> None:
    srv = lab.start(nodeid="stable", stall_first="READ")
    mount_before = srv.mount_entry()
    rd = lab.reader("file")
    stalled = _wait_stalled(srv)
    assert rd.poll() is None, "the reader must still be waiting for its READ"
    old_pid = srv.pid
    new_pid = getattr(srv, how)()
    out, _ = rd.communicate(timeout=15)
    assert out == b"marker:file"
    assert new_pid != old_pid and _gone(old_pid)
    assert srv.mount_entry() == mount_before  # same mount, never remounted
    # the successor answered the very request the old server had read: resent by the kernel
    resent = [r for r in trace_records(srv.trace_path)
              if r.get("op") == "READ" and r.get("server_pid") == new_pid
              and r["unique"] & ~(1 << 63) == stalled["unique"]]
    assert resent and resent[0]["unique"] & 1 << 63 and resent[0]["result"] == 0
    take = _takeovers(srv)[-1]
    assert take["server_pid"] == new_pid and "RESEND" in take["notified"]
    assert "INC_EPOCH" in take["notified"]
    assert not any(r.get("op") == "INIT" and r.get("server_pid") == new_pid
                   for r in trace_records(srv.trace_path)), "a successor never sees INIT"


@pytest.mark.parametrize("how", ["live_restart", "kill_and_takeover", "kill"])
def test_the_holder_starts_with_the_first_restart(lab, how: str) -> None:
    """A mount that is never restarted runs no holder (one process start less per mount);
    the first restart or kill starts one with the live server's fd: the connection lives on."""
    srv = lab.start(nodeid="stable")
    assert srv.holder is None and not os.path.exists(srv.socket_path)
    mount_before = srv.mount_entry()
    getattr(srv, how)()
    assert srv.holder is not None and srv.holder.poll() is None
    assert srv.mount_entry() == mount_before
    if how != "kill":  # a successor serves the same connection
        assert (lab.mnt / "file").read_bytes() == b"marker:file"


def test_a_restart_after_the_server_died_says_the_connection_is_gone(lab) -> None:
    srv = lab.start(nodeid="stable")
    os.kill(srv.pid, 9)  # no holder yet: its /dev/fuse fd, the connection's last, closes
    srv.proc.wait(timeout=10)
    with pytest.raises(RefServerError, match="exited before a holder took"):
        srv.live_restart()
    assert srv.holder is None and len(srv.pids) == 1  # no successor was started


@pytest.mark.parametrize("how", ["live_restart", "kill_and_takeover"])
def test_old_handles_decode_after_a_restart(lab, how: str) -> None:
    srv = lab.start(nodeid="stable")
    encoded = [encode(lab.mnt, lab.src, rel) for rel in ("file", "dir", "dir/inner")]
    getattr(srv, how)()
    getattr(srv, how)()  # twice: the holder hands the fd on again
    drop_caches()
    for enc in encoded:
        assert same_object(enc, decode(lab.mnt, enc)), enc.rel
    assert [t["epoch"] for t in _takeovers(srv)] == [1, 2]
    assert len(srv.pids) == 3


def test_open_files_and_writes_continue_across_handovers(lab) -> None:
    srv = lab.start(nodeid="stable", timeout=0)
    f = open(lab.mnt / "file", "r+b")  # closed below, after an abort if need be
    try:
        srv.live_restart()
        assert f.read() == b"marker:file"  # READ on an fh of the previous instance
        srv.kill_and_takeover()
        f.seek(0)
        f.write(b"MARKER")
        f.flush()
        os.fsync(f.fileno())
    except BaseException:
        srv.stop()  # abort first: closing a file of a server-less mount would hang
        raise
    finally:
        f.close()
    assert (lab.src / "file").read_bytes() == b"MARKER:file"
    reopened = [r for r in trace_records(srv.trace_path) if "reopened_fh" in r]
    assert {r["server_pid"] for r in reopened} == set(srv.pids[1:])


def test_volatile_table_survives_a_graceful_handover_but_not_a_kill(lab) -> None:
    srv = lab.start(nodeid="volatile", timeout=0)
    fd = os.open(lab.mnt / "file", os.O_RDONLY)
    try:
        srv.live_restart()
        assert _takeovers(srv)[-1]["restored_nodes"] >= 1
        assert os.fstat(fd).st_ino == os.stat(lab.src / "file").st_ino  # GETATTR answered
        srv.kill_and_takeover()
        assert _takeovers(srv)[-1]["restored_nodes"] == 0
        with pytest.raises(OSError) as ei:
            os.fstat(fd)  # the new instance has never heard of this nodeid
        assert ei.value.errno == errno.ESTALE
    except BaseException:
        srv.stop()  # abort first: closing a file of a server-less mount would hang
        raise
    finally:
        os.close(fd)


def test_a_journaled_volatile_table_survives_a_kill(lab, tmp_path: Path) -> None:
    """--journal on (ref-lh-handles): the successor of a SIGKILLed instance replays the
    journal, so the nodeids the kernel holds still name their files, kill after kill, and
    nodeids freed before the kill are handed out as the dead instance would have."""
    srv = lab.start(nodeid="volatile", timeout=0, journal="on",
                    state_dir=str(tmp_path / "state"))
    fd = os.open(lab.mnt / "file", os.O_RDONLY)
    try:
        os.stat(lab.mnt / "dir" / "inner")
        for _ in range(2):
            srv.kill_and_takeover()
            assert _takeovers(srv)[-1]["restored_nodes"] >= 3  # file, dir, dir/inner
            assert os.fstat(fd).st_ino == os.stat(lab.src / "file").st_ino  # GETATTR answered
        (lab.src / "late").write_bytes(b"late")
        assert os.stat(lab.mnt / "late").st_size == 4
        # the late file's nodeid is a new one: the replayed counter did not hand out again
        # a nodeid the kernel still holds
        assert os.fstat(fd).st_ino == os.stat(lab.src / "file").st_ino
        inner = os.stat(lab.src / "dir" / "inner").st_ino
        assert os.stat(lab.mnt / "dir" / "inner").st_ino == inner
    except BaseException:
        srv.stop()
        raise
    finally:
        os.close(fd)


def test_server_killed_mid_request_leaves_nothing_behind(lab) -> None:
    srv = lab.start(stall_first="READ")
    rd = lab.reader("dir/inner")
    _wait_stalled(srv)
    srv.kill()  # no successor: the READ is never answered by anyone
    assert srv.mount_entry() is not None and rd.poll() is None  # the holder keeps it alive
    srv.stop()
    out, _ = rd.communicate(timeout=10)
    assert out.startswith(b"ERR:"), out  # aborted, not hung
    assert int(out[4:]) in (errno.ENOTCONN, errno.ECONNABORTED, errno.EIO)
    assert srv.mount_entry() is None and srv.holder is None
