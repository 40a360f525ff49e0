"""Booting a kernel under test in a qemu VM (TCG, virtme-ng) and running the suite inside it.

- `apt`: Debian's packages, read-only, through the system's or a private apt configuration.
- `kernels`: find or download the kernel to boot (Debian packages or a user's build).
- `build` + `kconfig`: `nfsconf kernel build`, a Debian kernel source with a patch series.
- `runner`: boot it with a command, with a hard timeout and no process left behind.
- `console`: what a crashed or hung kernel printed.
- `lane`: the knfsd lane: the run service on the host and inside the guest.
"""
