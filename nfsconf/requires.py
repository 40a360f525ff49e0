"""Every precondition of a scenario, each a named check in this one module, as fstests
keeps its `_require_*` helpers in common/rc.

A check returns None when it is met, or the reason it is not. Two kinds:

- *declared* needs (`@scenario(..., needs=("refserver",))`, NEEDS below) are known from the
  profile, the transport and the kernel alone, so the plugin checks them before the lab
  mounts anything: a cell that cannot run costs nothing, and no mount can break it first;
- *found* needs (what INIT settled, a server that makes no hard links) are only known once
  the server runs: the scenario asks through its Cell, which raises `Unsupported`.

`Unsupported` is the domain's "cannot run here"; the plugin turns it into SKIP with the
reason, so `Lab` and `Cell` never import pytest's skip for it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from nfsconf.environment import kernel_lookup_handle, kernel_offers
from nfsconf.fuse.initflags import DECLINED
from nfsconf.servers.profile import Profile

# transports whose exports knfsd makes: the kernel NFS client runs beside them, in the guest
KNFSD_TRANSPORTS = ("knfsd", "knfsd-subtree")
KERNEL_CLIENT_ONLY_IN_VM = ("the kernel NFS client exists only in the knfsd VM (the host "
                            "kernel has no NFS client)")


class Unsupported(Exception):
    """This cell cannot run here; the message says why (a SKIP, never a FAIL)."""


@dataclass(frozen=True)
class Setting:
    """What a cell runs on, known before anything mounts."""

    profile: Profile
    transport: str
    pynfs: bool = False  # `nfsconf run --pynfs DIR` was given


def where(setting: Setting, where_: str) -> str | None:
    """The scenario's level (local: name_to_handle_at on the FUSE mount; nfs: the wire)
    against the transport."""
    if where_ == "local" and setting.transport != "local":
        return ("exportfs-level check (name_to_handle_at on the FUSE mount): runs on the "
                "local transport")
    if where_ == "nfs" and setting.transport == "local":
        return "NFS wire check: runs on the ganesha and knfsd transports"
    return None


def refserver(setting: Setting) -> str | None:
    if setting.profile.refserver is None:
        return (f"needs the reference server (restart without unmount, hostile modes); "
                f"profile {setting.profile.name} is {setting.profile.binary}")
    return None


# a restart without unmount (scenario.RESTARTS) -> the profile's [restart] command doing it
IN_PLACE = {"handover": "handover", "sigkill": "takeover"}
# what a SKIP for want of [restart] starts with: one reason for every profile in a matrix
NO_RESTART_IN_PLACE = "no restart without unmount"


def restart_in_place(setting: Setting, how: str) -> str | None:
    """The server can be restarted HOW ("handover" or "sigkill") without unmount: the
    reference server always, any other server when its profile declares the [restart]
    command for it."""
    p = setting.profile
    if p.refserver is not None or getattr(p.restart, IN_PLACE[how]) is not None:
        return None
    return (f"{NO_RESTART_IN_PLACE}: profile {p.name} declares no restart.{IN_PLACE[how]} "
            f"command ({how}); nfsconf restarts a server in place only through its "
            "profile's [restart] commands")


def live_restart(setting: Setting) -> str | None:
    """The server can be restarted without unmount at all (one way or the other)."""
    reasons = [restart_in_place(setting, how) for how in IN_PLACE]
    return None if None in reasons else (
        f"{NO_RESTART_IN_PLACE}: profile {setting.profile.name} declares no [restart] command "
        "(handover, takeover)")


def writable(setting: Setting) -> str | None:
    p = setting.profile
    if not p.writable:
        return (f"profile {p.name} serves a read-only {p.source} image: the scenario must "
                f"create and remove")
    return None


def lookup_handle(setting: Setting) -> str | None:
    """The kernel offers FUSE_LOOKUP_HANDLE and the server is not configured to decline
    it (what its INIT would say: known before a mount it could break). Only a reference
    server mode says so before it runs (its lookup_handle knob); any other server is
    mounted, and the fid type the kernel gives its files tells (Cell.require_lookup_handle:
    SKIP, or FAIL when the profile claims lookup_handle)."""
    dialect, why = kernel_lookup_handle()
    if dialect is None:
        return f"LOOKUP_HANDLE not negotiated: {why}"
    if (setting.profile.refserver or {}).get("lookup_handle") == "off":
        return f"LOOKUP_HANDLE not negotiated: {DECLINED}"
    return None


def kernel_client(setting: Setting) -> str | None:
    return None if setting.transport in KNFSD_TRANSPORTS else KERNEL_CLIENT_ONLY_IN_VM


def pynfs(setting: Setting) -> str | None:
    return None if setting.pynfs else "pynfs not asked for (nfsconf run --pynfs DIR)"


def kernel_flag(flag: str, needed_for: str) -> Callable[[Setting], str | None]:
    """A mainline FUSE INIT flag the kernel under test must offer."""
    def check(setting: Setting) -> str | None:
        offered, why = kernel_offers(flag)
        return None if offered else f"{why}: {needed_for}"
    return check


def connectable() -> str | None:
    """The kernel knows AT_HANDLE_CONNECTABLE (found: probed on the suite's own tmpdir, so a
    FUSE error is never taken for the answer)."""
    from nfsconf.transports.local import connectable_supported

    known, _ = connectable_supported()
    return None if known else "kernel lacks AT_HANDLE_CONNECTABLE (name_to_handle_at: EINVAL)"


# The names a scenario may declare in `needs`.
NEEDS: dict[str, Callable[[Setting], str | None]] = {
    "refserver": refserver,
    "live_restart": live_restart,
    "writable": writable,
    "lookup_handle": lookup_handle,
    "kernel_client": kernel_client,
    "pynfs": pynfs,
    # a successor asks for the resend with FUSE_NOTIFY_RESEND: without it (before 7.40) a
    # held-back request stays queued for the dead instance
    "resend": kernel_flag("HAS_RESEND", "the successor cannot ask the kernel to resend the "
                          "request its predecessor held"),
}


def unmet(setting: Setting, where_: str, needs: tuple[str, ...]) -> str | None:
    """The first reason this cell cannot run, in the order declared; None: it can."""
    reason = where(setting, where_)
    for name in needs:
        if reason is not None:
            break
        reason = NEEDS[name](setting)
    return reason


def require(reason: str | None) -> None:
    """Raise Unsupported when a found need is unmet (REASON is not None)."""
    if reason is not None:
        raise Unsupported(reason)
