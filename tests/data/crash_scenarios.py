"""Input for tests/test_run.py: a scenario whose server dies half way, then a normal one."""

import os
import signal

import pytest

from nfsconf.scenario import decode


@pytest.mark.scenario("CRASH-KILL", "MUST")
def test_server_killed_mid_scenario(lab, evidence):
    obj = lab.obj("d0/f1")
    evidence.encoded("file", lab.encode(obj))
    os.kill(lab.server.pid, signal.SIGKILL)
    lab.server.proc.wait()
    outcome = decode(lab, evidence, obj, "after SIGKILL")
    assert outcome == "same", f"decode after the server died: {outcome}"


@pytest.mark.scenario("CRASH-STOP", "MUST")
def test_server_stopped_mid_scenario(lab, evidence):
    obj = lab.obj("d0/f3")
    evidence.encoded("file", lab.encode(obj))
    os.kill(lab.server.pid, signal.SIGSTOP)
    lab.drop_caches()  # the decode must now ask the stopped server
    outcome = decode(lab, evidence, obj, "after SIGSTOP")
    assert outcome == "same", f"decode with the server stopped: {outcome}"


@pytest.mark.scenario("AFTER-CRASH", "MUST")
def test_next_scenario_runs(lab, evidence):
    obj = lab.obj("d0/f2")
    evidence.encoded("file", lab.encode(obj))
    assert decode(lab, evidence, obj, "warm") == "same"


@pytest.mark.scenario("KERNEL-LOG", "MUST")
def test_kernel_warning_fails_scenario(lab, evidence):
    # stands in for a kernel WARN during a scenario: the plugin must fail the cell on it
    with open("/dev/kmsg", "w") as kmsg:
        kmsg.write("<4>nfsconf self-test: WARNING: CPU: 0 PID: 1 at fs/fuse/export.c:1\n")
