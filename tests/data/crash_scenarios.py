"""Input for tests/test_run.py: a scenario whose server dies half way, then a normal one."""

import os
import signal

import pytest


@pytest.mark.scenario("CRASH-KILL", "MUST")
def test_server_killed_mid_scenario(lab, cell):
    obj = cell.obj("d0/f1")
    cell.encode(obj, "file")
    os.kill(lab.server.pid, signal.SIGKILL)
    lab.server.proc.wait()
    outcome = cell.decode(obj, "after SIGKILL")
    assert outcome == "same", f"decode after the server died: {outcome}"


@pytest.mark.scenario("CRASH-STOP", "MUST")
def test_server_stopped_mid_scenario(lab, cell):
    obj = cell.obj("d0/f3")
    cell.encode(obj, "file")
    cell.drop_caches()  # before the stop: the decode itself must ask the stopped server
    os.kill(lab.server.pid, signal.SIGSTOP)
    outcome = cell.decode(obj, "after SIGSTOP")
    assert outcome == "same", f"decode with the server stopped: {outcome}"


@pytest.mark.scenario("AFTER-CRASH", "MUST")
def test_next_scenario_runs(cell):
    obj = cell.obj("d0/f2")
    with cell.pinned(obj):
        cell.encode(obj, "file")
        assert cell.decode(obj, "warm") == "same"


@pytest.mark.scenario("KERNEL-LOG", "MUST")
def test_kernel_warning_fails_scenario(lab, evidence):
    # stands in for a kernel WARN during a scenario: the plugin must fail the cell on it
    with open("/dev/kmsg", "w") as kmsg:
        kmsg.write("<4>nfsconf self-test: WARNING: CPU: 0 PID: 1 at fs/fuse/export.c:1\n")


@pytest.mark.scenario("SERVER-BUG", "MUST")
def test_server_exception_is_no_refusal(lab, evidence):
    # like HOSTILE-DOT, this accepts ESTALE or EIO; a handler of the reference server that
    # raises answers EIO too, which must make the cell ERROR, never PASS
    lab.require_ref()
    lab.restart(fault="lookup-dot")
    obj = lab.obj("d0/f5")
    lab.encode(obj)
    lab.drop_caches()
    outcome = evidence.decoded("cold", obj, lab.decode(obj))
    assert outcome in ("ESTALE", "EIO"), outcome
