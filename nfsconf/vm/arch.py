"""Per-architecture facts of a kernel under test, behind one lookup.

Two kinds of kernel run the guest side: an x86 bzImage booted by qemu under TCG (the image a
distribution ships), and a User-Mode Linux binary (ARCH=um) that runs as a host process at
host speed. Everything that differs between them for building and recognising an image
lives here; what differs for booting lives in the engine (`vm/engine.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nfsconf.errors import KernelError
from nfsconf.vm import kconfig


@dataclass(frozen=True)
class Arch:
    name: str  # "x86" | "um": what `kernel build --arch` and the env record say
    make_arch: str  # ARCH= for make
    image: str  # the bootable image in a built tree
    targets: tuple[str, ...]  # what `make` builds
    config: str  # the Kconfig fragment over allnoconfig
    engine: str  # which engine boots it: "qemu" | "uml"
    # modules are installed out of the tree for the guest (UML has no vng to do it)
    install_modules: bool

    def tree_image(self, tree: Path) -> Path:
        return tree / self.image


ARCHES: dict[str, Arch] = {
    "x86": Arch("x86", "x86_64", "arch/x86/boot/bzImage", ("bzImage", "modules"),
                kconfig.GUEST, "qemu", install_modules=False),
    "um": Arch("um", "um", "linux", ("linux", "modules"), kconfig.UML, "uml",
               install_modules=True),
}

# where `make modules_install` puts a UML tree's modules (lib/modules/<release> below it)
TREE_MODULES = "nfsconf-modules"


def arch(name: str) -> Arch:
    try:
        return ARCHES[name]
    except KeyError:
        raise KernelError(f"unknown kernel arch {name!r}: "
                          f"{' or '.join(sorted(ARCHES))}") from None


def arch_of_config(config_text: str) -> Arch:
    """A built tree's arch, from its .config (CONFIG_UML=y is ARCH=um)."""
    return ARCHES["um"] if "\nCONFIG_UML=y" in "\n" + config_text else ARCHES["x86"]
