"""process.wait_quiet on real processes: a server whose thread still runs is busy; one
whose threads all sleep is quiet."""

import subprocess
import sys
import time

from nfsconf import process

SPIN_THEN_SLEEP = ("import time\nend = time.monotonic() + {spin}\n"
                   "while time.monotonic() < end: pass\ntime.sleep(60)\n")


def test_a_spinning_thread_is_busy_until_it_sleeps():
    p = subprocess.Popen([sys.executable, "-c", SPIN_THEN_SLEEP.format(spin=0.5)])
    try:
        time.sleep(0.1)
        assert process.busy_threads(p.pid) == [p.pid]
        started = time.monotonic()
        assert process.wait_quiet(p.pid, timeout=10) == []
        assert time.monotonic() - started < 5
    finally:
        p.kill()
        p.wait()


def test_a_server_that_never_sleeps_is_still_busy_at_the_timeout():
    p = subprocess.Popen([sys.executable, "-c", SPIN_THEN_SLEEP.format(spin=30)])
    try:
        time.sleep(0.1)
        assert process.wait_quiet(p.pid, timeout=0.3) == [p.pid]
    finally:
        p.kill()
        p.wait()


def test_a_process_that_is_gone_is_quiet():
    p = subprocess.Popen(["true"])
    p.wait()
    assert process.wait_quiet(p.pid, timeout=1) == []
