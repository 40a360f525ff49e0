"""Booting a kernel under test in a qemu VM (TCG, virtme-ng) and running knfsd inside it.

- `kernels`: find or download the kernel to boot (Debian packages or a user's build).
- `runner`: boot it with a command, with a hard timeout and no process left behind.
- `guest`: runs *inside* the VM: modules, knfsd exports of a FUSE mount, kernel NFS mounts.
"""

from nfsconf.vm.kernels import Kernel, KernelError, default_cache_dir, resolve_kernel
from nfsconf.vm.runner import VmBootError, VmError, VmResult, VmSetupError, run_in_vm

__all__ = [
    "Kernel",
    "KernelError",
    "VmBootError",
    "VmError",
    "VmResult",
    "VmSetupError",
    "default_cache_dir",
    "resolve_kernel",
    "run_in_vm",
]
