"""What a crashed or hung kernel under test printed on the VM's console.

The lane boots the guest with `oops=panic` and the hung-task and soft-lockup detectors set
to panic, so a kernel that oopses, hangs or locks up ends the VM at once; the console
holds the kernel's own words, which become the evidence of the cell that was running.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# The guest's command line: every kind of kernel trouble that leaves the suite stuck
# becomes a panic, and panic=-1 (virtme's own) ends the VM. The hung-task limit sits well
# above the suite's per-scenario time limit (120 s), which aborts FUSE waits by itself.
PANIC_ON_TROUBLE = ("oops=panic", "softlockup_panic=1", "hung_task_panic=1",
                    "sysctl.kernel.hung_task_timeout_secs=300")

_TS = re.compile(r"^\[\s*\d+\.\d+\]\s?")
_START = re.compile(r"BUG:|Oops:|general protection fault|Kernel panic|"
                    r"INFO: task .* blocked for more than|watchdog: BUG: soft lockup|"
                    r"KASAN:|UBSAN:|kernel BUG at")
_END = re.compile(r"---\[ end (trace|Kernel panic)")
_FRAME = re.compile(r"^\s*(\?\s*)?([A-Za-z0-9_.]+)\+0x[0-9a-f]+/0x[0-9a-f]+")
_MAX_LINES = 80


@dataclass
class KernelCrash:
    title: str  # "BUG: kernel NULL pointer dereference, address: 0000000000000000"
    rip: str | None  # "fuse_iget+0xd0/0x410"
    trace: list[str] = field(default_factory=list)  # reliable frames, innermost first
    lines: list[str] = field(default_factory=list)  # the block as printed, timestamps off
    kind: str = "oops"  # oops | hang | lockup | panic

    def summary(self) -> str:
        where = f" at {self.rip}" if self.rip else ""
        via = f" (via {' < '.join(self.trace[:4])})" if self.trace else ""
        return f"{self.title}{where}{via}"


def kernel_crash(console: str) -> KernelCrash | None:
    """The first oops, BUG, hung task, soft lockup or panic on the console, or None."""
    lines = [_TS.sub("", ln) for ln in console.splitlines()]
    start = next((i for i, ln in enumerate(lines) if _START.search(ln)), None)
    if start is None:
        return None
    block: list[str] = []
    for ln in lines[start:start + _MAX_LINES]:
        block.append(ln)
        if _END.search(ln):
            break
    title = block[0].strip()
    kind = ("hang" if "blocked for more than" in title else
            "lockup" if "soft lockup" in title else
            "panic" if title.startswith("Kernel panic") else "oops")
    rip = next((m.group(1) for ln in block if (m := re.search(r"RIP: 0010:(\S+)", ln))), None)
    trace: list[str] = []
    in_trace = False
    for ln in block:
        if "Call Trace:" in ln:
            in_trace = True
            continue
        if in_trace:
            if "</TASK>" in ln or "RIP: 0033" in ln:
                break
            m = _FRAME.match(ln)
            if m and not m.group(1):  # '?' frames are guesses of the unwinder
                trace.append(m.group(2))
    return KernelCrash(title, rip, trace, block, kind)
