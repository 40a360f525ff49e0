"""Booting a kernel under test in a qemu VM (TCG, virtme-ng) and running knfsd inside it.

- `kernels`: find or download the kernel to boot (Debian packages or a user's build).
- `runner`: boot it with a command, with a hard timeout and no process left behind.
- `guest`: runs *inside* the VM: modules, knfsd exports of a FUSE mount, kernel NFS mounts.

Names are imported lazily: the guest imports `nfsconf.vm.guest` through 9p under TCG, where
every extra module costs real seconds (measured: importing runner+kernels+psutil took
~2.5 s of a 7 s guest-side Python start).
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "Kernel": "kernels",
    "KernelError": "kernels",
    "default_cache_dir": "kernels",
    "resolve_kernel": "kernels",
    "VmBootError": "runner",
    "VmError": "runner",
    "VmResult": "runner",
    "VmSetupError": "runner",
    "guest_python": "runner",
    "run_in_vm": "runner",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> object:  # no typing import: it is costly in the guest
    if name in _EXPORTS:
        module = importlib.import_module(f"nfsconf.vm.{_EXPORTS[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'nfsconf.vm' has no attribute {name!r}")
