"""What each engine's console says of a crashed kernel, and of the guest command's end.

The UML text is a real console: the LOOKUP_HANDLE series built with ARCH=um, oopsing on a
cold directory decode (DEC-COLD-SAFE/dir, finding 1 of issue 10). UML prints its registers
before the panic line and its stack after it; the crash must name the same place the qemu
run names (`fuse_iget`, reached through `fuse_get_parent` and `reconnect_path`).
"""

from __future__ import annotations

from pathlib import Path

from nfsconf.vm.console import kernel_crash
from nfsconf.vm.uml import UML

DATA = Path(__file__).parent / "data"

X86_OOPS = """\
[   41.216011] BUG: kernel NULL pointer dereference, address: 0000000000000000
[   41.216300] #PF: supervisor read access in kernel mode
[   41.217003] Oops: Oops: 0000 [#1] SMP NOPTI
[   41.218511] RIP: 0010:fuse_iget+0xd0/0x410
[   41.221040] Call Trace:
[   41.221100]  <TASK>
[   41.221230]  ? __die+0x23/0x70
[   41.221800]  fuse_lookup_name+0x1f0/0x300
[   41.221900]  fuse_get_parent+0x92/0x110
[   41.222000]  reconnect_path+0xa2/0x2f0
[   41.222100]  exportfs_decode_fh_raw+0x32a/0x3f0
[   41.222300]  </TASK>
[   41.222400] RIP: 0033:0x7f2b8a2f5b3d
[   41.229000] ---[ end trace 0000000000000000 ]---
"""


def test_uml_oops_names_the_fault_and_its_callers():
    crash = kernel_crash((DATA / "uml-oops-console.txt").read_text())
    assert crash is not None
    assert crash.title == "Kernel panic - not syncing: Kernel mode fault at addr 0x0, " \
                          "ip 0x602d07ec"
    assert crash.kind == "panic"
    assert crash.rip == "fuse_iget+0xec/0x450"  # from the register dump before the panic
    assert crash.trace[:4] == ["fuse_lookup_name", "fuse_get_parent", "reconnect_path",
                               "exportfs_decode_fh_raw"]
    assert "sys_open_by_handle_at" in crash.trace
    assert crash.lines[0] == "Modules linked in:"  # the block starts at the registers
    assert crash.summary().endswith("at fuse_iget+0xec/0x450 (via fuse_lookup_name < "
                                    "fuse_get_parent < reconnect_path < "
                                    "exportfs_decode_fh_raw)")


def test_x86_oops_reads_as_before():
    crash = kernel_crash(X86_OOPS)
    assert crash is not None and crash.kind == "oops"
    assert crash.title.startswith("BUG: kernel NULL pointer dereference")
    assert crash.rip == "fuse_iget+0xd0/0x410"  # not the user-space RIP: 0033 line
    assert crash.trace == ["fuse_lookup_name", "fuse_get_parent", "reconnect_path",
                           "exportfs_decode_fh_raw"]


def test_a_console_without_trouble_is_no_crash():
    text = (DATA / "uml-oops-console.txt").read_text().split("fuse: Handle already")[0]
    assert kernel_crash(text) is None


def test_uml_exit_status_comes_from_the_console_line():
    console = "nfsconf-guest: starting script at 0.65\r\nnoise\r\nnfsconf-guest: exit 2\r\n"
    assert UML.exit_status(console, 0) == 2  # UML itself powered off cleanly
    assert UML.guest_boot_uptime(console) == 0.65
    # no status line: the command never finished (a panic); UML's own status stands
    assert UML.exit_status("Kernel panic - not syncing: ...", -6) == -6
