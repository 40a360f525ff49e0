"""Export handles on the reference server, decoded cold by the real kernel.

name_to_handle_at on the mount, drop_caches, open_by_handle_at: the kernel then has to ask
the server LOOKUP(nodeid, ".") (and ".." for directories), which is what the knobs change.
"""

from __future__ import annotations

import errno
import os
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest

from nfsconf.fuse import sysutil as su
from nfsconf.fuse.control import RefServer
from nfsconf.fuse.trace import trace_records
from nfsconf.transports import local


def drop_caches() -> None:
    os.sync()
    local.drop_caches()


@dataclass
class Encoded:
    rel: str
    htype: int
    handle: bytes  # a ready struct file_handle
    ino: int  # of the backing file in the source
    marker: bytes | None  # file content written at setup; None for directories


def encode(mnt: Path, src: Path, rel: str) -> Encoded:
    dfd = os.open(mnt, os.O_RDONLY | os.O_DIRECTORY)
    try:
        htype, data, _mnt = su.name_to_handle_at(dfd, rel)
    finally:
        os.close(dfd)
    marker = (src / rel).read_bytes() if (src / rel).is_file() else None
    return Encoded(rel, htype, su.make_handle_buffer(htype, data), os.stat(src / rel).st_ino,
                   marker)


def decode(mnt: Path, enc: Encoded) -> tuple[str, int | None, bytes | None]:
    """("ok", ino, content) or (errno name, None, None). Identity = backing ino + marker."""
    mfd = os.open(mnt, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fd = su.open_by_handle_at(mfd, enc.handle, os.O_RDONLY)
    except OSError as e:
        return errno.errorcode[e.errno], None, None
    finally:
        os.close(mfd)
    try:
        ino = os.fstat(fd).st_ino
        content = os.read(fd, 4096) if enc.marker is not None else None
        return "ok", ino, content
    finally:
        os.close(fd)


def nodeid_of(enc: Encoded) -> int:
    """The nodeid inside a 0x81 fid: nodeid hi, nodeid lo, generation as host-order u32s."""
    raw = bytes(enc.handle)[8:]  # skip struct file_handle's handle_bytes and handle_type
    return int.from_bytes(raw[0:4], "little") << 32 | int.from_bytes(raw[4:8], "little")


def same_object(enc: Encoded, got: tuple[str, int | None, bytes | None]) -> bool:
    return got[0] == "ok" and got[1] == enc.ino and got[2] == enc.marker


@pytest.fixture
def lab(ref_mounts: SimpleNamespace) -> SimpleNamespace:
    (ref_mounts.src / "d1" / "d2").mkdir(parents=True)
    for rel in ("top", "d1/mid", "d1/d2/deep"):
        (ref_mounts.src / rel).write_bytes(f"marker:{rel}".encode())
    return ref_mounts


TARGETS = ("top", "d1/mid", "d1/d2/deep", "d1", "d1/d2")


def test_stable_nodeids_decode_files_and_directories_cold(lab) -> None:
    srv = lab.start(nodeid="stable")
    encoded = [encode(lab.mnt, lab.src, rel) for rel in TARGETS]
    assert all(e.htype == 0x81 for e in encoded)  # FILEID_INO64_GEN: nodeid + generation
    drop_caches()
    for enc in encoded:
        got = decode(lab.mnt, enc)
        assert same_object(enc, got), (enc.rel, got)
    dots = [r for r in trace_records(srv.trace_path)
            if r.get("op") == "LOOKUP" and r.get("name") in (".", "..")]
    assert any(r["name"] == "." and r["result"] == 0 for r in dots)
    assert any(r["name"] == ".." and r["result"] == 0 for r in dots)  # directories reconnect
    for r in dots:  # "." answers with the very nodeid that was asked for
        if r["name"] == ".":
            assert r["reply"]["nodeid"] == r["nodeid"]


def test_volatile_nodeids_give_estale_or_the_same_file(lab) -> None:
    srv = lab.start(nodeid="volatile")
    encoded = [encode(lab.mnt, lab.src, rel) for rel in TARGETS]
    drop_caches()
    results = {enc.rel: decode(lab.mnt, enc) for enc in encoded}
    for enc in encoded:
        got = results[enc.rel]
        assert got[0] == "ESTALE" or same_object(enc, got), (enc.rel, got)
    assert any(got[0] == "ESTALE" for got in results.values()), results
    stale = [r for r in trace_records(srv.trace_path)
             if r.get("op") == "LOOKUP" and r.get("name") == "." and r["result"] == "ESTALE"]
    assert stale, "the ESTALE comes from the server's answer to LOOKUP(nodeid, '.')"


def _wait_forgotten(trace_path: str, nodeid: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for r in trace_records(trace_path):
            if r.get("op") == "FORGET" and r.get("nodeid") == nodeid and r.get("dropped"):
                return
            if r.get("op") == "BATCH_FORGET" and r.get("dropped") and any(
                    n == nodeid for n, _ in r.get("forgets", [])):
                return
        time.sleep(0.01)
    raise AssertionError(f"the server never dropped nodeid {nodeid} after drop_caches")


def _reuse(lab, generation: str) -> tuple[Encoded, tuple[str, int | None, bytes | None], int]:
    """Encode A, let the kernel forget it, create B (reusing A's nodeid), decode A."""
    srv = lab.start(nodeid="volatile", generation=generation)
    (lab.src / "victim").write_bytes(b"marker:victim")
    enc = encode(lab.mnt, lab.src, "victim")
    drop_caches()  # the kernel FORGETs A: a volatile server frees its nodeid
    # the FORGET is queued, not answered: create B only once the server has freed A's
    _wait_forgotten(srv.trace_path, nodeid_of(enc))
    (lab.mnt / "newcomer").write_bytes(b"marker:newcomer")
    # an open fd pins B's inode (with the reused nodeid) even if someone drops caches now
    pin = os.open(lab.mnt / "newcomer", os.O_RDONLY)
    try:
        got = decode(lab.mnt, enc)
    finally:
        os.close(pin)
    creates = [r for r in trace_records(srv.trace_path)
               if r.get("op") == "CREATE" and r.get("name") == "newcomer"]
    return enc, got, creates[0]["reply"]["nodeid"] if creates else -1


def test_volatile_reuse_with_generation_zero_decodes_the_wrong_file(lab) -> None:
    enc, got, reused = _reuse(lab, "zero")
    assert reused == nodeid_of(enc)
    # the worst outcome, produced on purpose: A's handle opens B
    assert got[0] == "ok" and got[1] == os.stat(lab.src / "newcomer").st_ino
    assert got[2] == b"marker:newcomer" and not same_object(enc, got)


def test_volatile_reuse_with_generation_bump_is_estale(lab) -> None:
    enc, got, reused = _reuse(lab, "bump")
    assert reused == nodeid_of(enc)
    assert got[0] == "ESTALE", got


def test_forget_ignore_keeps_volatile_nodes_decodable(lab) -> None:
    lab.start(nodeid="volatile", forget="ignore")
    encoded = [encode(lab.mnt, lab.src, rel) for rel in TARGETS]
    drop_caches()
    for enc in encoded:
        assert same_object(enc, decode(lab.mnt, enc)), enc.rel


def test_stable_handles_survive_unmount_and_a_new_server(lab) -> None:
    first = lab.start(nodeid="stable")
    encoded = [encode(lab.mnt, lab.src, rel) for rel in TARGETS]
    first.stop()
    assert first.mount_entry() is None
    second = lab.start(nodeid="stable")
    assert second.pid != first.pid
    drop_caches()
    for enc in encoded:
        assert same_object(enc, decode(lab.mnt, enc)), enc.rel


def test_stable_handle_of_a_deleted_file_is_estale(lab) -> None:
    lab.start(nodeid="stable")
    (lab.src / "gone").write_bytes(b"x")
    enc = encode(lab.mnt, lab.src, "gone")
    os.unlink(lab.mnt / "gone")
    drop_caches()
    assert decode(lab.mnt, enc)[0] == "ESTALE"


def test_stable_nodeids_on_a_non_ext4_source_use_the_state_map(tmp_path: Path,
                                                               tmpfs_dir: Path) -> None:
    import tempfile

    with tempfile.TemporaryDirectory(dir=tmpfs_dir, prefix="nfsconf-ref-") as s:
        src, mnt, state = Path(s), tmp_path / "mnt", tmp_path / "state"
        mnt.mkdir()
        (src / "sub").mkdir()
        (src / "sub" / "f").write_bytes(b"marker:tmpfs")
        srv = RefServer(workdir=str(tmp_path / "w1"))
        try:
            srv.start(str(src), str(mnt), nodeid="stable", state_dir=str(state))
            encoded = [encode(mnt, src, rel) for rel in ("sub", "sub/f")]
        finally:
            srv.stop()
        assert (state / "nodeids.jsonl").read_text().count("\n") >= 2  # nodeid -> handle
        srv = RefServer(workdir=str(tmp_path / "w2"))
        try:
            srv.start(str(src), str(mnt), nodeid="stable", state_dir=str(state))
            drop_caches()
            for enc in encoded:  # a new instance finds them through the recorded map
                assert same_object(enc, decode(mnt, enc)), enc.rel
        finally:
            srv.stop()
        assert su.mounts_at(str(mnt)) == []
