"""The verdict logic, branch by branch (nfsconf/verdict.py is pure: no mounts needed)."""

import errno

import pytest

from nfsconf.verdict import (
    CellFacts,
    Phase,
    claim_broken,
    is_must,
    outcome_class,
    verdict,
)

OK = Phase("passed")


def v(setup=OK, call=OK, teardown=OK, **facts):
    out = verdict(setup, call, teardown, CellFacts(**facts))
    return out.verdict, out.reason


def test_all_phases_pass():
    assert v() == ("PASS", "")


def test_setup_failure_is_error_with_its_reason():
    assert v(setup=Phase("failed", "MountError: did not mount")) == (
        "ERROR", "setup: MountError: did not mount")


def test_setup_skip_is_skip():
    assert v(setup=Phase("skipped", "needs the reference server"), call=None) == (
        "SKIP", "needs the reference server")


def test_no_call_phase_is_error():
    assert v(call=None) == ("ERROR", "scenario did not run")


def test_assertion_is_fail_any_other_exception_is_error():
    assert v(call=Phase("failed", "AssertionError: cold decode: ESTALE", is_assert=True)) == (
        "FAIL", "cold decode: ESTALE")
    assert v(call=Phase("failed", "KeyError: 'fields'")) == ("ERROR", "KeyError: 'fields'")


def test_eopnotsupp_is_fail_not_exportable():
    msg = f"OSError: [Errno {errno.EOPNOTSUPP}] Operation not supported"
    out = v(call=Phase("failed", msg, errno=errno.EOPNOTSUPP))
    assert out[0] == "FAIL" and out[1].startswith("not exportable")
    # the export refusing at set-up (exportfs: "does not support NFS export") is the same
    out = v(setup=Phase("failed", "OSError: [Errno 95] exportfs ...", errno=errno.EOPNOTSUPP),
            call=None)
    assert out[0] == "FAIL" and out[1].startswith("not exportable")
    assert v(setup=Phase("failed", "OSError: [Errno 5] x", errno=errno.EIO), call=None)[0] == \
        "ERROR"
    # the errno of the exception decides, not text that looks like one
    assert v(call=Phase("failed", f"KeyError: '[Errno {errno.EOPNOTSUPP}]'"))[0] == "ERROR"


def test_estale_outside_a_decode_is_fail():
    """ESTALE raised while the scenario sets up its handles (knfsd refusing the handle of a
    file it just looked up) is the system's failure; other errors stay ERROR."""
    msg = f"OSError: [Errno {errno.ESTALE}] LOOKUP d0/f1: NFS3ERR_STALE"
    out = v(call=Phase("failed", msg, errno=errno.ESTALE))
    assert out == ("FAIL", "ESTALE on a live object: " + msg)
    assert v(call=Phase("failed", f"OSError: [Errno {errno.EIO}] x", errno=errno.EIO))[0] == \
        "ERROR"


def test_xfail_and_xpass():
    assert v(call=Phase("skipped", "", xfail="kernel trusts the server")) == (
        "XFAIL", "kernel trusts the server")
    assert v(call=Phase("passed", "", xfail="kernel trusts the server")) == ("PASS", "")


def test_call_skip():
    assert v(call=Phase("skipped", "kernel lacks AT_HANDLE_CONNECTABLE")) == (
        "SKIP", "kernel lacks AT_HANDLE_CONNECTABLE")


def test_teardown_failure_after_a_pass_is_error():
    assert v(teardown=Phase("failed", "still mounted")) == ("ERROR", "teardown: still mounted")


def test_kernel_trouble_fails_even_a_pass():
    assert v(kernel_trouble=("WARNING: CPU: 0 PID: 1 at fs/fuse/dir.c:100",)) == (
        "FAIL", "kernel: WARNING: CPU: 0 PID: 1 at fs/fuse/dir.c:100")


def test_kernel_trouble_wins_over_timeout_and_server_errors():
    out = v(kernel_trouble=("BUG: kernel NULL pointer dereference",), timeout="time limit",
            server_errors=("LOOKUP: TypeError",))
    assert out[0] == "FAIL" and "NULL pointer" in out[1]


def test_wrong_object_fails_whatever_the_phases_said():
    assert v(wrong_object=True) == ("FAIL", "WRONG OBJECT: a decode opened another object")
    got = v(call=Phase("failed", "AssertionError: WRONG OBJECT: d0/f1", is_assert=True),
            wrong_object=True, timeout="time limit 3 s exceeded")
    assert got == ("FAIL", "WRONG OBJECT: d0/f1")


def test_timeout_is_error():
    assert v(call=Phase("failed", "OSError: [Errno 107] ENOTCONN"),
             timeout="time limit 3 s exceeded; aborted fuse connection 41") == (
        "ERROR", "time limit 3 s exceeded; aborted fuse connection 41")


def test_server_exception_turns_a_pass_into_error():
    # HOSTILE-DOT accepts EIO: a crash of the server's own hostile branch answers EIO too
    out = v(server_errors=("LOOKUP: KeyError: 17 (server.py:412 in _lookup_dot)",))
    assert out == ("ERROR", "reference server raised: LOOKUP: KeyError: 17 "
                            "(server.py:412 in _lookup_dot)")


def test_server_exception_turns_a_skip_in_the_scenario_into_error():
    # a scenario that skips after the server raised (say, link(2) failed with the EIO of
    # our own bug) must not hide the bug as "not applicable"
    out = v(call=Phase("skipped", "no hard links"), server_errors=("LINK: KeyError",))
    assert out[0] == "ERROR"
    # a skip before the lab started (the transport does not apply) saw no server at all
    assert v(setup=Phase("skipped", "runs on the local transport"), call=None,
             server_errors=("x",)) == ("SKIP", "runs on the local transport")


@pytest.mark.parametrize(("level", "wrong", "kernel", "must"), [
    ("MUST", False, False, True), ("SHOULD", False, False, False),
    ("SHOULD", True, False, True), ("MUST", True, False, True), ("SHOULD", False, True, True)])
def test_must(level, wrong, kernel, must):
    assert is_must(level, wrong, kernel) is must


@pytest.mark.parametrize(("claimed", "verdict_", "broken"), [
    (True, "FAIL", True), (True, "ERROR", False), (True, "PASS", False),
    (False, "FAIL", False)])
def test_claims(claimed, verdict_, broken):
    assert claim_broken(claimed, verdict_) is broken


@pytest.mark.parametrize(("outcome", "cls"), [
    ("same", "same"), ("other", "other"), ("ESTALE", "error"), ("ENOENT", "error"),
    ("NFS3ERR_STALE", "error"), (None, "error")])
def test_outcome_classes(outcome, cls):
    assert outcome_class(outcome) == cls


class _TraceLab:
    """A lab that is only a reference server's trace: each decode appends the records the
    kernel's requests would leave, and fails."""

    def __init__(self) -> None:
        self.records: list[dict] = []
        self.next: list[dict] = []

    def trace_since(self, offset: int) -> tuple[list[dict], int]:
        return self.records[offset:], len(self.records)

    def decode(self, obj):
        from nfsconf.transports.base import Decoded

        self.records += self.next
        return Decoded(error="ESTALE")


def test_unsent_handles_names_lookups_by_nodeid_alone() -> None:
    """The kernel's part of a failed LOOKUP_HANDLE decode is named only when its '.' lookup
    carried no handle and the server could not answer; a LOOKUP_HANDLE with the handle, a
    plain LOOKUP, or one answered by nodeid adds nothing."""
    from nfsconf.evidence import Evidence
    from nfsconf.scenario import Cell
    from nfsconf.transports.base import Identity, Obj

    lab = _TraceLab()
    cell = Cell(lab, Evidence())  # type: ignore[arg-type]  # the hint reads the trace only
    obj = Obj("d0/f1", Identity(6, 1, False, "m"))
    asks = {
        "bare": {"op": "LOOKUP_HANDLE", "nodeid": 6, "name": ".", "result": "ESTALE"},
        "sent": {"op": "LOOKUP_HANDLE", "nodeid": 6, "name": ".", "parent_handle": "0a0b",
                 "result": "ESTALE"},
        "classic": {"op": "LOOKUP", "nodeid": 6, "name": ".", "result": "ESTALE"},
        "found": {"op": "LOOKUP_HANDLE", "nodeid": 7, "name": ".", "reply": {"nodeid": 7}},
    }
    for label, record in asks.items():
        lab.next = [record, {"op": "GETATTR", "nodeid": 6}]
        assert cell.observe(obj, label) == "ESTALE"
    asked = cell.ev.data["decodes"]
    assert asked["bare"]["kernel_asked"] == ["LOOKUP_HANDLE(0x6, '.', no handle) -> ESTALE"]
    assert asked["sent"]["kernel_asked"] == ["LOOKUP_HANDLE(0x6, '.', handle 0a0b) -> ESTALE"]
    assert asked["found"]["kernel_asked"] == ["LOOKUP_HANDLE(0x7, '.', no handle) -> nodeid 0x7"]
    hint = cell.unsent_handles(["bare", "sent", "classic"])
    assert "LOOKUP_HANDLE(0x6, '.', no handle)" in hint and "by nodeid alone" in hint
    assert "handle 0a0b" not in hint and "-> ESTALE" not in hint
    # answered by nodeid: the decode failed elsewhere (a subtree check), not for want of it
    assert cell.unsent_handles(["sent", "classic", "found", "missing"]) == ""


class _Export:
    """A transport as Cell.parent_left_out reads it: its capability flags only."""

    nfs = knfsd = True

    def __init__(self, subtree_check: bool, fh_size: int) -> None:
        self.subtree_check = subtree_check
        self.fh_size = fh_size


class _ExportLab:
    def __init__(self, transport: _Export) -> None:
        self.transport = transport


def _knfsd_handle(size: int, parent: int = 0):
    """A knfsd handle (FSID_NUM) around a 0x91 fid with a SIZE-byte server handle, or a
    0x92 fid when PARENT gives the parent's handle size."""
    from nfsconf.handles import FuseFid, FuseInodeHandle, KnfsdFh
    from nfsconf.transports.base import NFS_FH, Handle

    fid = FuseFid(FuseInodeHandle(0x10, 0, 0, bytes(size)),
                  FuseInodeHandle(0x11, 0, 0, bytes(parent)) if parent else None)
    return Handle(NFS_FH, KnfsdFh(1, b"\x65\0\0\0", fid).encode())


@pytest.mark.parametrize(("subtree", "fh_size", "size", "parent", "is_dir", "limited"), [
    (True, 64, 32, 0, False, True),     # ref-lh's 32 bytes: 0x92 needs >= 84 of 56
    (True, 64, 4, 0, False, False),     # a 0x92 of 4 + 1 bytes fits: 0x91 is not excused
    (True, 128, 32, 0, False, False),   # NFSv4's handle holds the 0x92
    (False, 64, 32, 0, False, False),   # no_subtree_check asks for no parent
    (True, 64, 32, 0, True, False),     # a directory reconnects through ".."
    (True, 128, 32, 32, False, False),  # a 0x92 fid names its parent
])
def test_parent_left_out_only_where_no_0x92_fits(subtree: bool, fh_size: int, size: int,
                                                 parent: int, is_dir: bool,
                                                 limited: bool) -> None:
    """A cold ESTALE is excused (the protocol's limit) only for a file's 0x91 fid under
    subtree_check where even the smallest 0x92 fid cannot fit the transport's handle."""
    from nfsconf.evidence import Evidence
    from nfsconf.scenario import Cell
    from nfsconf.transports.base import Identity, Obj

    cell = Cell(_ExportLab(_Export(subtree, fh_size)), Evidence())  # type: ignore[arg-type]
    obj = Obj("d0/f1", Identity(6, 1, is_dir, "m"), _knfsd_handle(size, parent))
    why = cell.parent_left_out(obj)
    assert (why is not None) == limited, why
    assert cell.stale_by_protocol(obj, "NFS3ERR_STALE") == limited
    assert not cell.stale_by_protocol(obj, "other") and not cell.stale_by_protocol(obj, "EIO")
    if limited:
        assert "0x91" in why and cell.ev.data["stale_by_protocol_limit"] == why
