"""What a crashed or hung kernel under test printed on the VM's console.

The lane boots the guest with `oops=panic` and the hung-task and soft-lockup detectors set
to panic, so a kernel that oopses, hangs or locks up ends the VM at once; the console
holds the kernel's own words, which become the evidence of the cell that was running.

Both engines' texts are read: x86 prints `RIP: 0010:fn+off/len` and a call trace between
<TASK> and </TASK>; User-Mode Linux prints its registers (`Pid: N, comm: ...`, `RIP:
0033:fn+off/len`) *before* the panic line ("Kernel panic - not syncing: Kernel mode fault
at addr 0x0, ip ..."), and a stack of `[<address>] fn+off/len` frames after it, the panic
and signal-delivery frames first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# The guest's command line: every kind of kernel trouble that leaves the suite stuck
# becomes a panic, which ends the guest (qemu: virtme's own panic=-1; UML exits). The
# hung-task limit sits well above the suite's per-scenario time limit (120 s), which aborts
# FUSE waits by itself.
PANIC_ON_TROUBLE = ("oops=panic", "softlockup_panic=1", "hung_task_panic=1",
                    "sysctl.kernel.hung_task_timeout_secs=300")

_TS = re.compile(r"^\[\s*\d+\.\d+\]\s?")
_START = re.compile(r"BUG:|Oops:|general protection fault|Kernel panic|"
                    r"INFO: task .* blocked for more than|watchdog: BUG: soft lockup|"
                    r"KASAN:|UBSAN:|kernel BUG at")
_END = re.compile(r"---\[ end (trace|Kernel panic)")
_FRAME = re.compile(r"^\s*(?:\[<[0-9a-f]+>\]\s*)?(\?\s*)?([A-Za-z0-9_.]+)\+0x[0-9a-f]+/0x[0-9a-f]+")
# a kernel function in a RIP line (x86: the selector is 0010; UML prints 0033 for its own
# kernel); a bare address (user space) is not one
_RIP = re.compile(r"RIP: [0-9a-f]{4}:([A-Za-z_][A-Za-z0-9_.]*\+0x[0-9a-f]+/0x[0-9a-f]+)")
# UML's register dump starts here, up to this many lines before its panic line
_UML_REGS = re.compile(r"^(Modules linked in:|Pid: \d+, comm: )")
_UML_LOOKBACK = 40
# frames of the panic itself and of UML's signal delivery: not where the kernel failed
_MACHINERY = {"dump_stack", "dump_stack_lvl", "panic", "segv", "segv_handler", "sig_handler",
              "sig_handler_common", "hard_handler", "unblock_signals", "um_set_signals",
              "block_signals", "relay_signal", "bad_segv", "show_stack", "vpanic",
              "__die", "die", "do_exit", "make_task_dead", "rewind_stack_and_make_dead"}
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
    title = lines[start].strip()
    first = start
    if title.startswith("Kernel panic"):  # UML: its register dump came first
        regs = [i for i in range(max(0, start - _UML_LOOKBACK), start)
                if _UML_REGS.match(lines[i])]
        if regs:
            first = regs[0]
    block: list[str] = []
    for ln in lines[first:start + _MAX_LINES]:
        block.append(ln)
        if _END.search(ln):
            break
    kind = ("hang" if "blocked for more than" in title else
            "lockup" if "soft lockup" in title else
            "panic" if title.startswith("Kernel panic") else "oops")
    rip = next((m.group(1) for ln in block if (m := _RIP.search(ln))), None)
    trace: list[str] = []
    in_trace = False
    for ln in block:
        if "Call Trace:" in ln:
            in_trace = True
            continue
        if in_trace:
            if "</TASK>" in ln or "RIP: 0033" in ln or (trace and not ln.strip()):
                break
            m = _FRAME.match(ln)
            # '?' frames are guesses of the unwinder
            if m and not m.group(1) and m.group(2) not in _MACHINERY:
                trace.append(m.group(2))
    return KernelCrash(title, rip, trace, block, kind)
