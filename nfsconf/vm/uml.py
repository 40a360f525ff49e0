"""The User-Mode Linux engine: a kernel built with ARCH=um runs as a host process, so the
guest's Python runs at host speed (no CPU emulation).

The guest's root is the host's, mounted read-only through hostfs; a tmpfs overlay over it
makes every path writable and throw-away, and only the run's own directories (`rw_dirs`,
and the boot's work directory for the command's stdout) are mounted through hostfs at
their own paths. Nothing of the host changes: /etc/exports, /var/lib/nfs, the Python
bytecode caches all land in the overlay.

UML facts the engine relies on: the console is the process's stdout (`con0=fd:0,fd:1`);
an init that exits panics the kernel, so the init powers off with sysrq; a panic makes UML
SIGTERM its process group and exit (SIGABRT), so it runs in a session of its own; every
guest process is a host process (a tree the runner ends as a whole).
"""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

from nfsconf.vm.engine import BootSpec, search_path
from nfsconf.vm.kernels import Kernel, uml_command, uml_help, uml_release

STARTING = "nfsconf-guest: starting script"
_STARTED = re.compile(re.escape(STARTING) + r" at (\d+\.\d+)")
_EXIT = re.compile(r"^nfsconf-guest: exit (\d+)\r?$", re.M)
# what the guest's init runs from the host's root
HOST_REQUIREMENTS = {"chroot": "coreutils", "mount": "mount", "ip": "iproute2",
                     "modprobe": "kmod"}

# PID 1: the overlay root, the host directories the run writes, then the command in a
# chroot. {placeholders} are filled in per boot, each shell-quoted.
_INIT = """#!/bin/sh
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
grep -qw overlay /proc/filesystems || modprobe -d {mods} overlay
mount -t tmpfs -o mode=0755 nfsconf-guest /mnt
mkdir /mnt/upper /mnt/work /mnt/root
mount -t overlay -o lowerdir=/,upperdir=/mnt/upper,workdir=/mnt/work nfsconf-root /mnt/root
N=/mnt/root
for d in {rw_dirs}; do
    mkdir -p "$N$d" && mount -t hostfs -o "$d" hostfs "$N$d"
done
mount -t proc proc $N/proc
mount -t sysfs sysfs $N/sys
mount -t devtmpfs devtmpfs $N/dev
mkdir -p $N/dev/pts $N/dev/shm
mount -t devpts devpts $N/dev/pts
mount -t tmpfs tmpfs $N/dev/shm
mount -t tmpfs -o mode=0755 tmpfs $N/run
if [ -d {mods}/lib/modules ]; then
    mkdir -p $N/lib/modules && mount --bind {mods}/lib/modules $N/lib/modules
fi
echo "{starting} at $(cut -d' ' -f1 /proc/uptime)"
exec chroot $N /bin/sh {stage2}
"""

# In the guest's root: loopback up, the command, its status on the console, power off.
_STAGE2 = """ip link set lo up
hostname nfsconf-guest
cd {cwd}
/bin/sh {command} > {stdout}
echo "nfsconf-guest: exit $?"
echo o > /proc/sysrq-trigger
sleep 60
"""


class Uml:
    name = "uml"
    description = "User-Mode Linux"
    time_scale = 1.0  # host speed
    pack_python = False  # hostfs reads the host's files at host speed
    console_on_stdout = True
    boot_marker = STARTING.encode()

    def check_host(self) -> list[str]:
        path = search_path()
        return [f"{prog} missing: apt-get install {pkg}"
                for prog, pkg in HOST_REQUIREMENTS.items()
                if shutil.which(prog, path=path) is None]

    def check_image(self, kernel: Kernel) -> None:
        uml_release(kernel.image)

    def argv(self, kernel: Kernel, spec: BootSpec, work: Path) -> list[str]:
        q = shlex.quote
        mods = str(kernel.modules_root) if kernel.modules_root else "/nonexistent"
        command = work / "command.sh"
        command.write_text("exec " + shlex.join(spec.command) + "\n")
        stage2 = work / "stage2.sh"
        stage2.write_text(_STAGE2.format(cwd=q(str(spec.cwd or "/")), command=q(str(command)),
                                         stdout=q(str(work / "stdout"))))
        init = work / "init.sh"
        dirs = [str(Path(d).resolve()) for d in spec.rw_dirs] + [str(work)]
        init.write_text(_INIT.format(mods=q(mods), rw_dirs=" ".join(q(d) for d in dirs),
                                     starting=STARTING, stage2=q(str(stage2))))
        init.chmod(0o755)
        (work / "uml").mkdir()
        return [*uml_command(kernel.image), f"mem={spec.memory}", "rootfstype=hostfs",
                "rootflags=/", "ro", f"init={init}", "con=null", "con0=fd:0,fd:1", "printk.time=1",
                # the mconsole socket and pid file: in the boot's work directory, gone with
                # it (the default is ~/.uml, left behind by a crash)
                f"uml_dir={work / 'uml'}", f"umid={spec.name}", *self.fast_options(kernel),
                *spec.append]

    def fast_options(self, kernel: Kernel) -> list[str]:
        """seccomp=auto where the kernel has it (6.16 and later): guest processes trap
        their system calls with a seccomp filter instead of a ptrace stop each, half the
        time of a knfsd lane here (the console says "Checking that seccomp filters can be
        installed...OK"; a --kernel-arg seccomp=off after it turns it off)."""
        return ["seccomp=auto"] if "seccomp=<on/auto/off>" in uml_help(kernel.image) else []

    def exit_status(self, console: str, returncode: int) -> int | None:
        found = _EXIT.findall(console)
        return int(found[-1]) if found else returncode

    def guest_boot_uptime(self, console: str) -> float | None:
        m = _STARTED.search(console)
        return float(m.group(1)) if m else None


UML = Uml()
