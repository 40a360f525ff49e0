"""Restart without unmount: the server's /dev/fuse connection handed to a successor,
gracefully (handover) or after nfsconf SIGKILLs the serving process (sigkill), with
FUSE_NOTIFY_INC_EPOCH. The reference server does it with its fd holder; any other server
when its profile declares the [restart] commands (docs/certification.md, level 4); others
SKIP with the reason. Every restart is checked from the kernel — the same mount and FUSE
connection, the old process gone, the successor answering (nfsconf/servers/inplace.py) —
so a restart command that remounted, or left the old server serving, ERRORs the cell."""

import os
import select
import threading

import pytest

from nfsconf.lab import SEED_DIRS, SEED_FILES, time_scale
from nfsconf.lease import Lease
from nfsconf.requires import Unsupported
from nfsconf.scenario import KINDS, expect_same_or, scenario

MODES = ("handover", "sigkill")


def _live_restart_and_decode(cell, kind, mode):
    cell.require_restart(mode)
    objs = cell.seeds(kind)
    for obj in objs:
        cell.encode_unrecorded(obj)
    cell.encoded("first", objs[0].handle)
    done = cell.live_restart(mode)
    cell.note("server_pids", [done.old_pid, done.new_pid])
    cell.drop_caches()  # the successor must answer for every old nodeid itself
    for rel in sorted(SEED_FILES + SEED_DIRS, reverse=True):
        os.stat(cell.path(rel))
    return [cell.decode(obj, obj.rel) for obj in objs]


@scenario("LIVE-RESTART-SAFE", "MUST", certify=4, needs=("live_restart",))
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", KINDS)
def test_live_restart_safe(cell, kind, mode):
    """LIVE-RESTART-SAFE: after the server hands its connection to a successor (gracefully,
    or after SIGKILL), old handles open the same object or give ESTALE; never another
    object."""
    for outcome in _live_restart_and_decode(cell, kind, mode):
        expect_same_or(outcome, ("ESTALE",), f"after live restart ({mode})")


@scenario("LIVE-RESTART", "SHOULD", claim="live_restart", certify=4, needs=("live_restart",))
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", KINDS)
def test_live_restart_survives(cell, kind, mode):
    """LIVE-RESTART: after a restart without unmount every old handle still opens its
    object, cold."""
    outcomes = _live_restart_and_decode(cell, kind, mode)
    bad = [o for o in outcomes if o != "same"]
    assert not bad, f"after live restart ({mode}): {len(bad)} of {len(outcomes)}: {set(bad)}"


def _reader(cell, rel):
    got: dict[str, object] = {}

    def read() -> None:
        try:
            with open(cell.path(rel)) as f:
                got["data"] = f.read()
        except OSError as e:
            got["error"] = e.strerror

    t = threading.Thread(target=read, daemon=True)
    t.start()
    return t, got


@scenario("IN-FLIGHT", "MUST", certify=4, needs=("live_restart", "resend"))
@pytest.mark.parametrize("mode", MODES)
def test_request_in_flight_survives_restart(cell, mode):
    """IN-FLIGHT: a reader blocked on a request the server has read but not answered while
    the server is replaced gets its data: the successor answers the very request the kernel
    resends (or the old server answers it before it leaves)."""
    cell.require_restart(mode)
    rel = "d0/f4"
    if cell.profile.refserver is not None:
        t, got = _held_by_the_server(cell, mode, rel)
    else:
        t, got = _held_by_the_source(cell, mode, rel)
    cell.note("reader", got)
    assert got.get("data") == cell.markers[rel], f"reader got {got}"


def _held_by_the_server(cell, mode, rel):
    """The reference server holds its first READ back itself; its trace shows the resend."""
    cell.restart(stall_first="READ")
    _, start = cell.trace_since()
    t, got = _reader(cell, rel)
    stalled = cell.wait_trace(lambda r: r.get("op") == "READ" and r.get("stalled"), start)
    assert t.is_alive(), f"the reader returned although its READ was held back: {got}"
    new = cell.live_restart(mode).new_pid
    t.join(30)
    assert not t.is_alive(), "the reader is still blocked after the restart"
    resent = cell.wait_trace(lambda r: r.get("op") == "READ" and r.get("server_pid") == new
                             and r["unique"] & ~(1 << 63) == stalled["unique"], start, 5)
    cell.note("resent", {"unique": hex(resent["unique"]), "result": resent["result"]})
    return t, got


def _held_by_the_source(cell, mode, rel):
    """Any other server: a write lease on the source's file makes the server's open of it
    wait (nfsconf/lease.py), so the server has read OPEN (or READ) and cannot answer until
    nfsconf lets it. sigkill: the lease goes once the server is dead, so only a successor
    that gets the request resent can answer it. handover: the lease holds until the old
    process leaves or HOLD seconds pass; a server that leaves with the request unanswered
    needs the resend too, one that waits for it answers it itself first: both must give the
    reader its data."""
    backing = cell.backing_file(rel)
    if backing is None:
        raise Unsupported(f"profile {cell.profile.name} serves a {cell.profile.source} "
                          "image: nfsconf can hold a request in flight only through a "
                          "source file the server opens")
    hold = 3.0 * time_scale()
    with Lease(backing) as lease:
        t, got = _reader(cell, rel)
        if not lease.wait_breaking(10 * time_scale()):
            t.join(10)
            raise RuntimeError(f"the server answered the reader ({got}) without opening "
                               f"{backing}: nfsconf could not hold its request in flight")
        assert t.is_alive(), f"the reader returned while the server's open waited: {got}"
        if mode == "sigkill":
            done = cell.live_restart(mode, old_gone=lease.release)
        else:
            left: dict[str, bool] = {}
            timer = threading.Thread(target=_release_when_gone,
                                     args=(lease, cell.server_pid, hold, left), daemon=True)
            timer.start()
            done = cell.live_restart(mode, old_gone=lease.release)
            timer.join(hold + 5)
            cell.note("old_server_left_holding_the_request", left.get("gone", False))
    cell.note("server_pids", [done.old_pid, done.new_pid])
    t.join(30)
    assert not t.is_alive(), "the reader is still blocked after the restart"
    return t, got


def _release_when_gone(lease, pid, hold, left):
    """Release LEASE when process PID exits, or after HOLD seconds."""
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        left["gone"] = True
    else:
        try:
            ready, _, _ = select.select([fd], [], [], hold)
            left["gone"] = bool(ready)
        finally:
            os.close(fd)
    lease.release()
