"""process.ProcessTree on real processes: a tree ends with its supervisor even when the
supervisor is killed outright and never gets to stop it."""

import os
import signal
import subprocess
import sys
import time

import psutil

# a supervisor that starts its tree from a thread, as the VM lanes do, then waits
SUPERVISOR = """
import threading, time
from nfsconf.process import ProcessTree
def start():
    tree = ProcessTree(["sleep", "300"])
    print(tree.pid, flush=True)
    time.sleep(300)
threading.Thread(target=start).start()
"""


def gone_within(p: psutil.Process, seconds: float) -> bool:
    """is_running compares start times: a reused PID is not the process."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            if not p.is_running() or p.status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


def test_a_tree_ends_when_its_supervisor_is_killed_outright():
    sup = subprocess.Popen([sys.executable, "-c", SUPERVISOR], stdout=subprocess.PIPE,
                           text=True)
    root = None
    try:
        assert sup.stdout is not None
        root = psutil.Process(int(sup.stdout.readline()))
        assert root.cmdline() == ["sleep", "300"]  # setpriv is gone: it exec'd the command
        sup.kill()  # no handler, no finally: only the kernel can end the tree now
        sup.wait()
        assert gone_within(root, 5), "the tree outlived its supervisor"
    finally:
        sup.kill()
        sup.wait()
        if root is not None and root.is_running():
            os.kill(root.pid, signal.SIGKILL)
