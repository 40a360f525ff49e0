"""Hostile modes of the reference server, seen through the real kernel's handle decoding.

Only the decode path misbehaves (LOOKUP of "." / ".."), so the mount is otherwise usable
and each mode produces one known, traced outcome for the lead's scenarios to classify.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
from test_refserver_handles import decode, encode, same_object

from nfsconf.fuse.control import RefServer
from nfsconf.fuse.trace import trace_records
from nfsconf.transports import local


def drop_caches() -> None:
    os.sync()
    local.drop_caches()


@pytest.fixture
def lab(ref_mounts: SimpleNamespace) -> SimpleNamespace:
    for name in ("alpha", "beta"):
        (ref_mounts.src / name).write_bytes(f"marker:{name}".encode())
    return ref_mounts


def _dot_lookups(srv: RefServer) -> list[dict]:
    return [r for r in trace_records(srv.trace_path)
            if r.get("op") == "LOOKUP" and r.get("name") == "."]


def test_dot_wrong_nodeid_fails_the_decode(lab) -> None:
    srv = lab.start(hostile="dot-wrong-nodeid")
    enc = encode(lab.mnt, lab.src, "alpha")
    drop_caches()
    # fuse_get_dentry returns EIO on the nodeid mismatch, but exportfs_decode_fh maps every
    # error except ENOMEM to ESTALE: only the trace tells this apart from a forgotten node.
    assert decode(lab.mnt, enc)[0] == "ESTALE"
    rec = _dot_lookups(srv)[-1]
    assert rec["reply"]["nodeid"] != rec["nodeid"] and "hostile" in rec
    assert (lab.mnt / "alpha").read_bytes() == b"marker:alpha"  # the rest still works


def test_generation_flip_makes_the_kernel_answer_estale(lab) -> None:
    srv = lab.start(hostile="generation-flip")
    enc = encode(lab.mnt, lab.src, "alpha")
    drop_caches()
    assert decode(lab.mnt, enc)[0] == "ESTALE"
    rec = _dot_lookups(srv)[-1]
    assert rec["reply"]["nodeid"] == rec["nodeid"] and rec["reply"]["generation"] != 0


def test_reuse_other_file_decodes_to_a_different_object(lab) -> None:
    srv = lab.start(hostile="reuse-other-file")
    enc = encode(lab.mnt, lab.src, "alpha")
    drop_caches()
    got = decode(lab.mnt, enc)
    assert got[0] == "ok" and not same_object(enc, got)  # the worst outcome, on purpose
    assert got[1] == os.stat(lab.src / "beta").st_ino and got[2] == b"marker:beta"
    rec = _dot_lookups(srv)[-1]
    assert rec["reply"]["nodeid"] == rec["nodeid"] and rec["reply"]["ino"] == got[1]


def test_no_reply_hangs_the_decoder_until_the_connection_is_aborted(lab) -> None:
    srv = lab.start(hostile="no-reply")
    enc = encode(lab.mnt, lab.src, "alpha")
    raw = bytes(enc.handle)
    drop_caches()
    code = ("import os, sys; from nfsconf.fuse import sysutil as su; "
            "fd = os.open(sys.argv[1], os.O_RDONLY); h = bytes.fromhex(sys.argv[2]); "
            "su.open_by_handle_at(fd, su.make_handle_buffer(int(sys.argv[3]), h[8:]), 0); "
            "print('decoded')")
    p = subprocess.Popen([sys.executable, "-c", code, str(lab.mnt), raw.hex(), str(enc.htype)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30  # the child's Python start may take a while
        withheld = []
        while not withheld and time.monotonic() < deadline and p.poll() is None:
            withheld = [r for r in _dot_lookups(srv) if r.get("hostile") == "no-reply"]
            time.sleep(0.05)
        assert p.poll() is None, p.communicate()
        assert withheld and withheld[0]["result"] == "no-reply"
        assert (lab.mnt / "beta").read_bytes() == b"marker:beta"  # only "." is withheld
        # The server has read the request, so the kernel "waits it out": not even SIGKILL
        # ends the decoder (request_wait_answer); only aborting the connection does.
        p.kill()
        with pytest.raises(subprocess.TimeoutExpired):  # still stuck in the kernel
            p.wait(timeout=1.0)
    finally:
        srv.stop()
        p.kill()
        p.wait(timeout=10)
    assert srv.mount_entry() is None


@pytest.mark.parametrize("mode", ["zero-handle", "oversize-handle"])
def test_handle_modes_are_inert_without_lookup_handle(lab, mode: str) -> None:
    srv = lab.start(hostile=mode)
    init = next(r for r in trace_records(srv.trace_path) if r.get("op") == "INIT")
    if "HAS_LOOKUP_HANDLE" in init["kernel"]["offered"]:
        pytest.skip("this kernel offers LOOKUP_HANDLE: covered by scenarios, not here")
    assert "inert" in init["note"]
    enc = encode(lab.mnt, lab.src, "alpha")
    drop_caches()
    assert same_object(enc, decode(lab.mnt, enc))
