"""`nfsconf doctor`: what this machine can run, what is missing, and the command to fix it."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass

from tabulate import tabulate

from nfsconf.environment import probe_fuse_init
from nfsconf.mounttable import mounts
from nfsconf.servers.builtin import BUILTIN
from nfsconf.transports.local import connectable_supported


@dataclass
class Check:
    what: str
    ok: bool
    detail: str
    fix: str = ""
    needed_for: str = "local"


def _other_nfsconf_running() -> bool:
    import psutil

    me = os.getpid()
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if p.info["pid"] != me and ("nfsconf" in cmd and "python" in cmd):
            return True
    return False


def checks() -> list[Check]:
    out: list[Check] = []
    root = os.geteuid() == 0
    out.append(Check("root", root, "euid 0" if root else f"euid {os.geteuid()}",
                     "run nfsconf as root (mounts, drop_caches, open_by_handle_at)"))
    fuse_ok = os.path.exists("/dev/fuse")
    out.append(Check("/dev/fuse", fuse_ok, "present" if fuse_ok else "missing",
                     "modprobe fuse (or run on a kernel with CONFIG_FUSE_FS)"))
    if fuse_ok and root:
        try:
            init = probe_fuse_init()
            out.append(Check("FUSE INIT", True, f"protocol {init['protocol']}: "
                             + " ".join(init["flags"])))
            lh = init["lookup_handle"]
            detail = (f"offered: {lh['dialect']} dialect, max_handle_sz {lh['max_handle_sz']} "
                      f"({lh['why']})" if lh["dialect"] else f"not offered: {lh['why']}")
            out.append(Check("FUSE_LOOKUP_HANDLE", bool(lh["dialect"]), detail,
                             "a kernel with the series: nfsconf kernel build --series DIR",
                             "LOOKUP_HANDLE"))
        except (OSError, RuntimeError, TimeoutError) as e:
            out.append(Check("FUSE INIT", False, str(e), "check that mount(2) is permitted"))
    dc = os.access("/proc/sys/vm/drop_caches", os.W_OK)
    out.append(Check("drop_caches", dc, "/proc/sys/vm/drop_caches writable" if dc else
                     "not writable", "run as root outside a read-only /proc"))
    try:
        ok, detail = connectable_supported()
    except OSError as e:
        ok, detail = False, str(e)
    out.append(Check("AT_HANDLE_CONNECTABLE", ok, detail,
                     "kernel >= 6.13 (scenarios ENC-CONN, PARENT-CONN skip without it)"))
    fusectl = os.path.exists("/sys/fs/fuse/connections")
    out.append(Check("fusectl", fusectl, "/sys/fs/fuse/connections" if fusectl else "absent",
                     "CONFIG_FUSE_FS provides it; nfsconf mounts it privately when needed"))
    for p in BUILTIN:
        have = p.installed()
        out.append(Check(f"server {p.name}", have, shutil.which(p.binary) or "not installed",
                         f"apt-get install {p.package}" if p.package else "", "profile"))
    for tool, package in (("mksquashfs", "squashfs-tools"),):
        have = shutil.which(tool) is not None
        out.append(Check(tool, have, shutil.which(tool) or "not installed",
                         f"apt-get install {package}", "profile squashfuse"))
    from nfsconf.vm.runner import check_host

    uml_problems = check_host("uml")
    out.append(Check("User-Mode Linux guest (uml:debian:SUITE)", not uml_problems,
                     "ready" if not uml_problems else "; ".join(uml_problems)[:90],
                     "make run installs them (see the Makefile's APT_GUEST)", "knfsd"))
    vm_problems = check_host("qemu")
    out.append(Check("qemu VM (qemu, virtme-ng, udev, busybox)", not vm_problems,
                     "ready" if not vm_problems else "; ".join(vm_problems)[:90],
                     "make test installs them (see the Makefile's APT_VM)", "knfsd (bzImage)"))
    for tool, package, use in (("exportfs", "nfs-kernel-server", "knfsd"),
                               ("ganesha.nfsd", "nfs-ganesha nfs-ganesha-vfs", "ganesha"),
                               ("rpcbind", "rpcbind", "ganesha")):
        have = shutil.which(tool) is not None
        out.append(Check(tool, have, shutil.which(tool) or "not installed",
                         f"apt-get install {package}", use))
    stale = [m.mountpoint for m in mounts() if m.is_fuse and "/nfsconf-" in m.mountpoint]
    if stale and _other_nfsconf_running():
        stale = []  # a run going on now owns them
    out.append(Check("no stale nfsconf mounts", not stale,
                     ", ".join(stale)[:90] or "none",
                     "a run was SIGKILLed: umount -l " + " ".join(stale), "local"))
    return out


def render(results: list[Check]) -> str:
    rows = [[c.what, "ok" if c.ok else "MISSING", c.needed_for, c.detail[:90],
             "" if c.ok else c.fix] for c in results]
    return tabulate(rows, ["check", "status", "needed for", "detail", "fix"])


def local_ready(results: list[Check]) -> bool:
    return all(c.ok for c in results if c.needed_for == "local" and
               c.what not in ("AT_HANDLE_CONNECTABLE", "no stale nfsconf mounts"))
