"""The kernel configuration of a VM kernel `nfsconf kernel build` makes.

Start from `allnoconfig` and set only what the guest needs: what virtme-ng's own config
(virtme-configkernel) requires to boot with a 9p root, plus what the lanes use (FUSE, nfsd
v3/v4, the NFS client, loop, squashfs, overlay, tmpfs). Everything else stays off, which is
what makes the build fit in minutes on two cores instead of the half hour of a
defconfig-sized kernel. A symbol listed here that Kconfig drops (an unmet dependency) is
an error of the build, never a silent gap.
"""

from __future__ import annotations

import re

# what the guest's userspace (the host's Debian: udev, Python, nfs-utils) needs, on
# both arches
_USERSPACE = """CONFIG_BINFMT_ELF=y
CONFIG_BINFMT_SCRIPT=y
CONFIG_MULTIUSER=y
CONFIG_FHANDLE=y
CONFIG_FUTEX=y
CONFIG_EPOLL=y
CONFIG_SIGNALFD=y
CONFIG_TIMERFD=y
CONFIG_EVENTFD=y
CONFIG_AIO=y
CONFIG_POSIX_TIMERS=y
CONFIG_FILE_LOCKING=y
CONFIG_INOTIFY_USER=y
CONFIG_PROC_FS=y
CONFIG_PROC_SYSCTL=y
CONFIG_SYSFS=y
CONFIG_DEVTMPFS=y
CONFIG_SHMEM=y
CONFIG_TMPFS=y
CONFIG_TMPFS_XATTR=y
"""

# the filesystems the lanes mount and export (nfsd and the NFS client follow per arch)
_FILESYSTEMS = """CONFIG_FUSE_FS=y
CONFIG_CUSE=n
CONFIG_EXPORTFS=y
CONFIG_OVERLAY_FS=y
CONFIG_BLOCK=y
CONFIG_BLK_DEV=y
CONFIG_BLK_DEV_LOOP=y
CONFIG_MISC_FILESYSTEMS=y
CONFIG_SQUASHFS=y
CONFIG_SQUASHFS_XZ=y
CONFIG_SQUASHFS_ZSTD=y
"""

GUEST = """
# the machine: 64-bit SMP x86 under qemu (TCG), console on the serial port
CONFIG_64BIT=y
CONFIG_SMP=y
CONFIG_ACPI=y
CONFIG_PCI=y
CONFIG_PRINTK=y
CONFIG_PRINTK_TIME=y
CONFIG_BUG=y
CONFIG_KALLSYMS=y
CONFIG_TTY=y
CONFIG_VT=y
CONFIG_UNIX98_PTYS=y
CONFIG_SERIAL_8250=y
CONFIG_SERIAL_8250_CONSOLE=y
CONFIG_EARLY_PRINTK=y
CONFIG_RTC_CLASS=y
CONFIG_RTC_HCTOSYS=y
CONFIG_RTC_DRV_CMOS=y
CONFIG_HW_RANDOM=y
CONFIG_HW_RANDOM_VIRTIO=y
# userspace: the host's Debian over 9p, udev, Python, nfs-utils
""" + _USERSPACE + """CONFIG_BLK_DEV_INITRD=y
CONFIG_KEYS=y
CONFIG_IKCONFIG=y
CONFIG_IKCONFIG_PROC=y
CONFIG_MODULES=y
CONFIG_MODULE_UNLOAD=y
CONFIG_LOCALVERSION_AUTO=n
CONFIG_DEBUG_INFO=n
# a kernel under test may hang: say so on the console
CONFIG_DEBUG_KERNEL=y
CONFIG_DETECT_HUNG_TASK=y
CONFIG_SOFTLOCKUP_DETECTOR=y
# virtio, 9p (the root and the run directory), loopback networking
CONFIG_VIRTIO=y
CONFIG_VIRTIO_MENU=y
CONFIG_VIRTIO_PCI=y
CONFIG_VIRTIO_CONSOLE=y
CONFIG_NET=y
CONFIG_INET=y
CONFIG_IPV6=y
CONFIG_UNIX=y
CONFIG_PACKET=y
CONFIG_NETDEVICES=y
CONFIG_NET_CORE=y
CONFIG_VIRTIO_NET=y
CONFIG_NETWORK_FILESYSTEMS=y
CONFIG_NET_9P=y
CONFIG_NET_9P_VIRTIO=y
CONFIG_9P_FS=y
CONFIG_9P_FS_POSIX_ACL=y
# what the lanes use
""" + _FILESYSTEMS + """CONFIG_NFSD=m
CONFIG_NFSD_V4=y
CONFIG_NFS_FS=m
CONFIG_NFS_V3=m
CONFIG_NFS_V4=m
CONFIG_NFS_V4_2=y
"""

_LINE = re.compile(r"^(CONFIG_[A-Za-z0-9_]+)=(.*)$")
_UNSET = re.compile(r"^# (CONFIG_[A-Za-z0-9_]+) is not set$")


def parse(text: str) -> dict[str, str]:
    """A config fragment or .config as {symbol: value}; `# X is not set` reads as n."""
    out: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if m := _LINE.match(line):
            out[m.group(1)] = m.group(2).strip()
        elif m := _UNSET.match(line):
            out[m.group(1)] = "n"
    return out


def missing(wanted: dict[str, str], final: dict[str, str], known: set[str]) -> list[str]:
    """What the final .config does not have as asked: `CONFIG_X=y (is n)`. Symbols this
    kernel's Kconfig does not know are left out (7.2 has no CONFIG_NFS_V4_1, say)."""
    out = []
    for sym, want in wanted.items():
        if sym.removeprefix("CONFIG_") not in known:
            continue
        got = final.get(sym, "n")
        if got != want and not (want == "n" and got == ""):
            out.append(f"{sym}={want} (is {got})")
    return out


def unknown(wanted: dict[str, str], known: set[str]) -> list[str]:
    return [s for s in wanted if s.removeprefix("CONFIG_") not in known]


# A User-Mode Linux guest (ARCH=um): the host's root over hostfs, the console on the
# process's stdout, everything the lanes use built in (no module loading at boot; modprobe
# still finds them in modules.builtin). UML in its default mode is one CPU.
UML = """
CONFIG_64BIT=y
CONFIG_PRINTK=y
CONFIG_PRINTK_TIME=y
CONFIG_BUG=y
CONFIG_KALLSYMS=y
CONFIG_FRAME_POINTER=y
CONFIG_TTY=y
CONFIG_UNIX98_PTYS=y
CONFIG_STDERR_CONSOLE=y
CONFIG_NULL_CHAN=y
CONFIG_FD_CHAN=y
CONFIG_HOSTFS=y
CONFIG_MCONSOLE=y
CONFIG_MAGIC_SYSRQ=y
""" + _USERSPACE + """CONFIG_KEYS=y
CONFIG_IKCONFIG=y
CONFIG_IKCONFIG_PROC=y
CONFIG_MODULES=y
CONFIG_LOCALVERSION_AUTO=n
CONFIG_DEBUG_INFO=n
# a kernel under test may hang: say so on the console
CONFIG_DEBUG_KERNEL=y
CONFIG_DETECT_HUNG_TASK=y
# loopback networking (NFS over 127.0.0.1)
CONFIG_NET=y
CONFIG_INET=y
CONFIG_IPV6=y
CONFIG_UNIX=y
CONFIG_PACKET=y
CONFIG_NETWORK_FILESYSTEMS=y
# what the lanes use, all built in
""" + _FILESYSTEMS + """CONFIG_NFSD=y
CONFIG_NFSD_V4=y
CONFIG_NFS_FS=y
CONFIG_NFS_V3=y
CONFIG_NFS_V4=y
CONFIG_NFS_V4_2=y
"""
