"""Booting a kernel under test — User-Mode Linux as a host process, or a bzImage in qemu
(TCG, virtme-ng) — and running the suite inside it.

- `apt`: Debian's packages, read-only, through the system's or a private apt configuration.
- `kernels`: find or download the kernel to boot (Debian packages or a user's build).
- `build` + `kconfig`: `nfsconf kernel build`, a Debian kernel source with a patch series.
- `arch`: per-arch facts (x86 bzImage for qemu, um for User-Mode Linux).
- `runner`: boot it with its engine and a command, with a hard timeout and no process left
  behind; `engine` says what an engine is, `qemu` and `uml` are the two.
- `console`: what a crashed or hung kernel printed.
- `lane`: the knfsd lane: the run service on the host and inside the guest.
"""
