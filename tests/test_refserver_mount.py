"""The reference server on a real kernel mount: every operation through the mount, checked
against the source directory underneath."""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import stat
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from nfsconf.fuse import sysutil as su
from nfsconf.fuse.control import RefServer, RefServerError
from nfsconf.fuse.trace import trace_records


@pytest.fixture
def lab(ref_mounts: SimpleNamespace) -> SimpleNamespace:
    return ref_mounts


def test_mount_appears_with_fsname_and_options(lab) -> None:
    srv = lab.start()
    m = srv.mount_entry()
    assert m is not None and m.fstype == "fuse.nfsconf-ref" and m.source == "nfsconf-ref"
    assert "allow_other" in m.options and "default_permissions" in m.options
    assert srv.pid is not None and srv.pids == [srv.pid]


def test_files_through_the_mount_match_the_source(lab) -> None:
    (lab.src / "pre").write_bytes(b"from source")
    lab.start()
    m, s = lab.mnt, lab.src
    assert (m / "pre").read_bytes() == b"from source"
    # create, write, append, read back on both sides
    (m / "new").write_bytes(b"hello")
    with open(m / "new", "ab") as f:
        f.write(b" world")
    assert (s / "new").read_bytes() == b"hello world"
    assert os.stat(m / "new").st_ino == os.stat(s / "new").st_ino  # backing inode numbers
    # truncate and overwrite in the middle
    os.truncate(m / "new", 5)
    with open(m / "new", "r+b") as f:
        f.seek(1)
        f.write(b"EL")
    assert (s / "new").read_bytes() == b"hELlo"
    # a big file crosses the 128 KiB max_write and max_pages boundaries
    blob = os.urandom(3 * 1024 * 1024 + 123)
    (m / "big").write_bytes(blob)
    assert hashlib.sha256((s / "big").read_bytes()).digest() == hashlib.sha256(blob).digest()
    assert (m / "big").read_bytes() == blob


def test_namespace_operations_match_the_source(lab) -> None:
    lab.start()
    m, s = lab.mnt, lab.src
    (m / "d" / "e").mkdir(parents=True)
    (m / "d" / "e" / "f").write_text("x")
    os.rename(m / "d" / "e" / "f", m / "d" / "g")
    assert (s / "d" / "g").read_text() == "x" and not (s / "d" / "e" / "f").exists()
    os.link(m / "d" / "g", m / "hard")
    assert os.stat(s / "hard").st_ino == os.stat(s / "d" / "g").st_ino
    assert os.stat(m / "hard").st_nlink == 2
    os.symlink("d/g", m / "sym")
    assert os.readlink(m / "sym") == "d/g" == os.readlink(s / "sym")
    assert (m / "sym").read_text() == "x"
    os.mkfifo(m / "fifo", 0o600)
    assert stat.S_ISFIFO(os.lstat(s / "fifo").st_mode)
    os.unlink(m / "hard")
    assert not (s / "hard").exists() and os.stat(m / "d" / "g").st_nlink == 1
    with pytest.raises(OSError) as ei:
        os.rmdir(m / "d")
    assert ei.value.errno == errno.ENOTEMPTY
    os.rmdir(m / "d" / "e")
    assert not (s / "d" / "e").exists()
    with pytest.raises(FileExistsError):
        os.open(m / "d" / "g", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    with pytest.raises(FileNotFoundError):
        os.stat(m / "missing")


def test_readdir_lists_names_types_and_inodes_of_the_source(lab) -> None:
    for i in range(300):  # more than one READDIR(PLUS) buffer
        (lab.src / f"file-{i:03d}-{'x' * (i % 40)}").write_text(str(i))
    (lab.src / "sub").mkdir()
    os.symlink("sub", lab.src / "link")
    lab.start()
    got = {e.name: (e.inode(), e.is_dir(follow_symlinks=False), e.is_symlink())
           for e in os.scandir(lab.mnt)}
    want = {e.name: (e.inode(), e.is_dir(follow_symlinks=False), e.is_symlink())
            for e in os.scandir(lab.src)}
    assert got == want
    # rewinddir sees changes made meanwhile
    fd = os.open(lab.mnt, os.O_RDONLY | os.O_DIRECTORY)
    try:
        first = set(os.listdir(fd))
        (lab.src / "late").write_text("")
        os.lseek(fd, 0, os.SEEK_SET)
        assert set(os.listdir(fd)) == first | {"late"}
    finally:
        os.close(fd)


def test_attributes_setattr_and_statfs(lab) -> None:
    (lab.src / "f").write_text("abc")
    lab.start(timeout=0)  # no attribute caching: every stat goes to the server
    m, s = lab.mnt, lab.src
    os.chmod(m / "f", 0o640)
    assert stat.S_IMODE(os.stat(s / "f").st_mode) == 0o640
    os.chown(m / "f", 1234, 4321)
    assert (os.stat(s / "f").st_uid, os.stat(s / "f").st_gid) == (1234, 4321)
    os.utime(m / "f", ns=(1_000_000_123, 2_000_000_456))
    st_s, st_m = os.stat(s / "f"), os.stat(m / "f")
    assert st_s.st_mtime_ns == st_m.st_mtime_ns == 2_000_000_456
    assert st_m.st_atime_ns == 1_000_000_123
    (s / "f").write_text("changed behind the server's back")
    assert os.stat(m / "f").st_size == os.stat(s / "f").st_size
    vs, vm = os.statvfs(s), os.statvfs(m)
    assert (vm.f_blocks, vm.f_bsize, vm.f_files) == (vs.f_blocks, vs.f_bsize, vs.f_files)


def test_rename2_flags_reach_the_source(lab) -> None:
    (lab.src / "a").write_text("A")
    (lab.src / "b").write_text("B")
    lab.start()
    libc = ctypes.CDLL(None, use_errno=True)
    at_fdcwd = -100
    a, b = str(lab.mnt / "a").encode(), str(lab.mnt / "b").encode()
    assert libc.renameat2(at_fdcwd, a, at_fdcwd, b, 2) == 0  # RENAME_EXCHANGE
    assert (lab.src / "a").read_text() == "B" and (lab.src / "b").read_text() == "A"
    assert libc.renameat2(at_fdcwd, a, at_fdcwd, b, 1) == -1  # RENAME_NOREPLACE
    assert ctypes.get_errno() == errno.EEXIST


def test_files_created_by_another_user_belong_to_that_user(lab) -> None:
    lab.start()
    os.chmod(lab.mnt, 0o777)
    # chdir first: pytest's tmp root is 0700, the mount itself is 0777
    code = (f"import os; os.chdir({str(lab.mnt)!r}); os.setgid(4321); os.setuid(1234); "
            "open('mine', 'w').write('u'); os.mkdir('mydir')")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)
    for name in ("mine", "mydir"):
        st = os.stat(lab.src / name)
        assert (st.st_uid, st.st_gid) == (1234, 4321)


def test_init_negotiation_is_recorded_in_the_trace(lab) -> None:
    srv = lab.start()
    os.listdir(lab.mnt)
    init = next(r for r in trace_records(srv.trace_path) if r.get("op") == "INIT")
    offered = init["kernel"]["offered"]
    assert init["kernel"]["major"] == 7 and init["kernel"]["minor"] >= 36
    assert "INIT_EXT" in offered and "EXPORT_SUPPORT" in offered
    assert any(name in offered for name in ("HAS_RESEND", "NO_EXPORT_SUPPORT")), \
        "bits >= 32 (flags2) missing from the record"
    reply = init["reply"]
    assert "EXPORT_SUPPORT" in reply["flags"]
    assert reply["lookup_handle"] is None and "HAS_LOOKUP_HANDLE" not in reply["flags"]
    assert ("HAS_LOOKUP_HANDLE" in offered) == (reply["lookup_handle"] is not None)


def test_export_off_tells_the_kernel_no_export(lab) -> None:
    (lab.src / "f").write_text("x")
    srv = lab.start(export="off")
    init = next(r for r in trace_records(srv.trace_path) if r.get("op") == "INIT")
    dfd = os.open(lab.mnt, os.O_RDONLY)
    try:
        if "NO_EXPORT_SUPPORT" in init["kernel"]["offered"]:
            assert "NO_EXPORT_SUPPORT" in init["reply"]["flags"]
            with pytest.raises(OSError) as ei:
                su.name_to_handle_at(dfd, b"f")
            assert ei.value.errno == errno.EOPNOTSUPP
        else:  # older kernel: handles encode but never decode cold
            assert "EXPORT_SUPPORT" not in init["reply"]["flags"]
    finally:
        os.close(dfd)


def test_trace_names_requests_and_replies(lab) -> None:
    srv = lab.start()
    (lab.mnt / "t").write_text("x")
    os.stat(lab.mnt / "t")
    recs = trace_records(srv.trace_path)
    create = next(r for r in recs if r.get("op") == "CREATE" and r.get("name") == "t")
    assert create["result"] == 0 and create["reply"]["ino"] == os.stat(lab.src / "t").st_ino
    assert create["reply"]["nodeid"] > 1 and "generation" in create["reply"]
    missing = [r for r in recs if r.get("op") == "LOOKUP" and r.get("result") == "ENOENT"]
    assert missing, "the negative LOOKUP before CREATE is traced with its errno"
    assert all({"ts", "unique", "nodeid", "server_pid"} <= r.keys() for r in recs if "op" in r)


def test_bad_arguments_fail_clearly(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown knob"):
        RefServer().start(str(tmp_path), str(tmp_path), colour="red")
    with pytest.raises(ValueError, match="not a directory"):
        RefServer().start(str(tmp_path / "nope"), str(tmp_path))
    res = subprocess.run([sys.executable, "-m", "nfsconf.fuse", str(tmp_path / "nope"),
                          str(tmp_path)], capture_output=True, text=True, timeout=30)
    assert res.returncode == 2 and "is not a directory" in res.stderr
    res = subprocess.run([sys.executable, "-m", "nfsconf.fuse", str(tmp_path), str(tmp_path),
                          "--nodeid", "sometimes"], capture_output=True, text=True, timeout=30)
    assert res.returncode == 2 and "invalid choice" in res.stderr
    # the server refuses to stack on an existing mount point (checked before mount(2))
    res = subprocess.run([sys.executable, "-m", "nfsconf.fuse", str(tmp_path), "/proc"],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 2 and "already a mount point" in res.stderr
    with pytest.raises(ValueError, match="already a mount point"):
        RefServer().start(str(tmp_path), "/proc")
    # a server that dies at start: the error carries its message, nothing is left behind
    (tmp_path / "mnt").mkdir()
    srv = RefServer(workdir=str(tmp_path / "w"))
    with pytest.raises(RefServerError, match="unknown opcode name"):
        srv.start(str(tmp_path), str(tmp_path / "mnt"), stall_first="NOPE")
    assert srv.holder is None and su.mounts_at(str(tmp_path / "mnt")) == []


def test_stop_twice_and_sigterm_unmounts(lab) -> None:
    srv = lab.start()
    srv.stop()
    assert srv.mount_entry() is None and srv.proc is not None and srv.proc.returncode == 0
    srv.stop()  # idempotent
