"""The reference server's knobs (Config) and what INIT settled with the kernel (Negotiated)."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields

from . import abi
from . import lookup_handle as lh

HOSTILE_MODES = ("dot-wrong-nodeid", "generation-flip", "reuse-other-file", "zero-handle",
                 "oversize-handle", "short-handle", "no-reply")
# test hooks: "lookup-dot" makes LOOKUP(nodeid, ".") raise, as a bug in a hostile branch would
FAULTS = ("lookup-dot",)
MAX_WRITE = 128 * 1024


@dataclass
class Config:
    """Every knob of the server; the CLI maps one option to each field."""

    source: str
    mountpoint: str
    nodeid: str = "stable"  # volatile | stable
    generation: str = "zero"  # zero | bump
    export: str = "on"  # on | off
    forget: str = "honour"  # honour | ignore
    handle_size: int = 32  # LOOKUP_HANDLE handle size, only if the kernel offers it
    # test hook: an object named hsN (N = 1..128) gets a handle of N bytes
    handle_size_by_name: bool = False
    handle_salt: str = "none"  # none | instance: handles of one server instance only
    proto_minor: int = abi.KERNEL_MINOR_VERSION  # the newest 7.x minor to speak
    hostile: str | None = None
    trace: str | None = None
    timeout: float = 1.0  # entry and attribute validity, seconds
    fsname: str = "nfsconf-ref"
    subtype: str = "nfsconf-ref"
    stall_first: str | None = None  # test hook: withhold the reply of the first such opcode
    # auto: speak LOOKUP_HANDLE when the kernel really offers it (initflags); off: decline;
    # v2 / v3: that dialect only
    lookup_handle: str = "auto"
    state_dir: str | None = None
    # on: volatile nodeids are journaled in state_dir while the connection lives, so a
    # successor after a SIGKILL knows what the kernel's nodeids (and its resent requests) name
    journal: str = "off"
    fault: str | None = None  # test hook, one of FAULTS

    def journal_path(self) -> str | None:
        """Where the volatile nodeids of this connection are journaled; None without
        --journal on (validate() checks that it has a state directory)."""
        if self.journal != "on" or self.state_dir is None:
            return None
        return os.path.join(self.state_dir, "volatile-nodeids.jsonl")

    def validate(self, takeover: bool = False) -> None:
        """Check every knob. A takeover must not stat the mountpoint: nobody serves it yet."""
        choices = {"nodeid": ("volatile", "stable"), "generation": ("zero", "bump"),
                   "export": ("on", "off"), "forget": ("honour", "ignore"),
                   "lookup_handle": ("auto", "off", "v2", "v3"),
                   "handle_salt": ("none", "instance"), "journal": ("off", "on")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"--{name.replace('_', '-')} must be one of {allowed}, "
                                 f"not {getattr(self, name)!r}")
        if self.hostile is not None and self.hostile not in HOSTILE_MODES:
            raise ValueError(f"--hostile must be one of {HOSTILE_MODES}, not {self.hostile!r}")
        if not 1 <= self.handle_size <= lh.FUSE_MAX_HANDLE_SZ:
            raise ValueError(f"--handle-size must be 1..{lh.FUSE_MAX_HANDLE_SZ}")
        if self.journal == "on" and (self.nodeid != "volatile" or self.state_dir is None):
            raise ValueError("--journal on needs --nodeid volatile and --state-dir: only a "
                             "counter's nodeids need a journal to outlive their instance")
        if self.fault is not None and self.fault not in FAULTS:
            raise ValueError(f"--fault must be one of {FAULTS}, not {self.fault!r}")
        if self.stall_first is not None and self.stall_first not in abi.Op.__members__:
            raise ValueError(f"--stall-first: unknown opcode name {self.stall_first!r}")
        if not os.path.isdir(self.source):
            raise ValueError(f"source {self.source!r} is not a directory")
        if not takeover and not os.path.isdir(self.mountpoint):
            raise ValueError(f"mountpoint {self.mountpoint!r} is not a directory")
        if not 23 <= self.proto_minor <= abi.KERNEL_MINOR_VERSION:
            raise ValueError(f"--proto-minor must be 23..{abi.KERNEL_MINOR_VERSION}")
        if self.timeout < 0:
            raise ValueError("--timeout must be >= 0")


@dataclass
class Negotiated:
    """What INIT settled; a successor needs it because it never sees INIT."""

    kernel_major: int = 0
    kernel_minor: int = 0
    kernel_flags: int = 0
    max_readahead: int = 0
    minor: int = 0
    flags: int = 0
    max_write: int = MAX_WRITE
    dialect: str | None = None
    max_handle_sz: int = 0
    epoch: int = 0  # server instance number on this connection (fh namespace)

    def settle(self, other: Negotiated) -> None:
        """Take every field of ``other`` in place: the server's parts share this one object,
        so what INIT or a takeover settles reaches all of them at once."""
        for f in fields(self):
            setattr(self, f.name, getattr(other, f.name))
