"""The scenario API: a `cell` is what one scenario works with.

    @scenario("DEC-COLD", "SHOULD", claim="cold_decode", certify=2)
    @pytest.mark.parametrize("kind", KINDS)
    def test_decode_cold(cell, kind):
        assert cell.roundtrip(cell.seed(kind)) == "same"

Every encode and decode a scenario makes through the cell lands in the evidence by itself,
with the handle's decoded fields and, for the reference server, the requests the kernel
sent to find the object again; a decode that opens another object fails the cell at MUST
level at once. The `require_*` gates skip with the reason in one place.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from nfsconf import requires
from nfsconf.evidence import Evidence
from nfsconf.handles import FILEID_FUSE_WITHOUT_PARENT, FuseFid, HandleError, decode_nfs_fh
from nfsconf.handles.fusefh import SIZEOF_FUSE_INODE_HANDLE, FuseInodeHandle
from nfsconf.lab import SEED_DIRS, SEED_FILES, Lab, time_scale
from nfsconf.servers.inplace import InPlaceRestart
from nfsconf.servers.profile import Profile
from nfsconf.transports.base import (
    MARKER_NAME,
    Decoded,
    Handle,
    Identity,
    Obj,
    Transport,
    as_errno_name,
)

# Seed objects every profile serves, read-only images included.
SEED = {"file": "d0/f1", "dir": "d1/sub"}
SEEDS = {"file": SEED_FILES, "dir": SEED_DIRS}
KINDS = ("file", "dir")
CACHES = ("warm", "cold")
RESTARTS = ("remount", "handover", "sigkill")
# where a scenario runs: exportfs level (name_to_handle_at on the FUSE mount), NFS wire, both
WHERE = ("local", "nfs", "any")


def scenario(sid: str, level: str, *, claim: str | None = None, certify: int | None = None,
             advisory: bool = False, where: str = "any", timeout: float | None = None,
             lookup_handle: bool = False, needs: tuple[str, ...] = ()) -> pytest.MarkDecorator:
    """The one marker of a scenario: its stable ID, MUST/SHOULD, the profile claim it checks,
    the certification level it counts for (docs/certification.md: required for the level,
    or only reported on the certificate when `advisory`; None: it describes the kernel and
    belongs to no level), where it runs (local, nfs or any transport) and, for a scenario
    that runs an outside suite taking its own time, its time limit instead of --timeout;
    `lookup_handle`: it needs a kernel that offers FUSE_LOOKUP_HANDLE and a server not
    configured to decline it, and SKIPs before any mount otherwise (a kernel that breaks
    plain servers then cannot make it ERROR at set-up); `needs`: the other preconditions
    known before a mount (nfsconf/requires.py NEEDS: "refserver", "writable", ...), checked
    before the lab starts, in this order."""
    if level not in ("MUST", "SHOULD") or where not in WHERE:
        raise ValueError(f"{sid}: level {level!r} / where {where!r}")
    unknown = [n for n in needs if n not in requires.NEEDS]
    if unknown:
        raise ValueError(f"{sid}: unknown needs {unknown}; known: {sorted(requires.NEEDS)}")
    needs = (("lookup_handle",) if lookup_handle else ()) + tuple(needs)
    return pytest.mark.scenario(sid, level, claim=claim, certify=certify, advisory=advisory,
                                where=where, timeout=timeout, needs=needs)


@dataclass(frozen=True)
class KernelRequest:
    """A LOOKUP or LOOKUP_HANDLE of '.' or '..' the kernel sent the reference server to find
    an object again, and the answer: the nodeid found, or the error."""

    op: str
    nodeid: int
    name: str
    handle: str | None  # hex of the server's handle the kernel sent with it
    found: int | None
    error: str | None

    @classmethod
    def from_record(cls, r: dict[str, Any]) -> KernelRequest:
        """From a LOOKUP or LOOKUP_HANDLE record of the reference server's trace."""
        return cls(r["op"], r.get("nodeid", 0), r["name"], r.get("parent_handle"),
                   (r.get("reply") or {}).get("nodeid"), r.get("result"))

    @property
    def request(self) -> str:
        via = f", handle {self.handle}" if self.handle else (
            ", no handle" if self.op == "LOOKUP_HANDLE" else "")
        return f"{self.op}({self.nodeid:#x}, {self.name!r}{via})"

    @property
    def bare(self) -> bool:
        """LOOKUP_HANDLE of '.' by nodeid alone: none of the handle bytes the fid holds."""
        return self.op == "LOOKUP_HANDLE" and self.name == "." and not self.handle

    def __str__(self) -> str:
        answer = f"nodeid {self.found:#x}" if self.found is not None else self.error
        return f"{self.request} -> {answer}"


class Cell:
    """One scenario's view of its lab (the mounted server and its transport) and of the
    evidence it leaves. Scenarios use only these methods and properties; `lab` and `ev`
    are the plugin's, and what the accessors below delegate to."""

    def __init__(self, lab: Lab, evidence: Evidence) -> None:
        self.lab = lab
        self.ev = evidence
        self._trace_at = 0
        self._asked: dict[str, list[KernelRequest]] = {}  # by decode label

    # -- what is under test ---------------------------------------------------------------
    @property
    def profile(self) -> Profile:
        """The server's profile: its name, claims, reference-server knobs, writability."""
        return self.lab.profile

    @property
    def transport(self) -> Transport:
        """The transport handles go through: .nfs, .knfsd, .subtree_check, the NFS clients."""
        return self.lab.transport

    @property
    def root(self) -> Path:
        """The lab's own directory, outside the FUSE mount: for scratch files and mounts."""
        return self.lab.root

    @property
    def markers(self) -> dict[str, str]:
        """Relative path -> the marker written into that seed or created object at setup."""
        return self.lab.markers

    def path(self, rel: str) -> Path:
        """REL's path through the FUSE mount ('' is the mount's root)."""
        return self.lab.path(rel)

    @property
    def server_pid(self) -> int | None:
        """The process serving the mount now (the one a restart in place replaces)."""
        return self.lab.server.pid if self.lab.server is not None else None

    def backing_file(self, rel: str) -> Path | None:
        """The source's own file behind REL (None for a server of an image)."""
        return self.lab.backing_file(rel)

    def restart(self, **knobs: Any) -> bool:
        """Unmount and mount again; KNOBS set the reference server's behaviour afresh.
        Returns whether the new instance started within the wall clock's second of the old
        one (recorded in the evidence too): a server that derives its generation numbers
        from the clock's seconds (mergerfs does) gives the old ones out again then."""
        before = self.lab.instance_seconds
        self.lab.restart(**knobs)
        same = len({*before, *self.lab.instance_seconds}) == 1
        self.ev.data.setdefault("restart_within_the_same_second", []).append(same)
        return same

    def abort(self) -> list[str]:
        """Abort the FUSE connection: whatever is blocked on the mount fails (ENOTCONN)."""
        return self.lab.abort()

    # -- the reference server's trace (empty for other servers) ---------------------------
    @property
    def has_trace(self) -> bool:
        """Whether the server writes a trace (the reference server does, no other)."""
        return self.lab.trace_path is not None

    def trace_since(self, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
        """The trace's records from OFFSET on, and the offset to read on from."""
        return self.lab.trace_since(offset)

    def server_handles(self) -> dict[int, bytes] | None:
        """nodeid -> the handle the reference server last gave the kernel for it (from its
        trace); None for a server without a trace: the fid is then its own evidence."""
        if not self.has_trace:
            return None
        records, _ = self.trace_since()
        given: dict[int, bytes] = {}
        for r in records:  # in order: a counter nodeid reused names its latest object
            if "handle" in r and "nodeid" in (r.get("reply") or {}):
                given[r["reply"]["nodeid"]] = bytes.fromhex(r["handle"])
            for nodeid, handle in r.get("entry_handles", []):  # READDIRPLUS entries
                given[nodeid] = bytes.fromhex(handle)
        return given

    def server_nodeid(self, part: FuseInodeHandle) -> int | None:
        """The nodeid a part of a 0x91/0x92 fid stands for now (`nodeid_of`, with the
        reference server's trace); None where no nodeid is known."""
        return nodeid_of(part, self.server_handles() or {})

    def negotiated(self) -> dict[str, Any] | None:
        """What the reference server's INIT settled (minor, dialect, ...); None elsewhere."""
        return self.lab.negotiated()

    # -- objects ------------------------------------------------------------------------
    def obj(self, rel: str) -> Obj:
        """REL as it is now, reached by name through the mount (no handle yet)."""
        return self.lab.obj(rel)

    def make_file(self, rel: str) -> Obj:
        """A new file REL with its own marker, made through the mount (SKIP if read-only)."""
        return self.lab.make_file(rel)

    def pinned(self, obj: Obj) -> AbstractContextManager[None]:
        """Hold OBJ open for the with-block, so its inode stays cached across drops."""
        return self.lab.pinned(obj)

    def refresh(self, obj: Obj) -> None:
        """After a restart: expect what OBJ's name reaches now (new st_dev, maybe new ino)."""
        self.lab.refresh(obj)

    def seed(self, kind: str) -> Obj:
        """The seed file or directory (SEED) every server serves, read-only images included."""
        return self.lab.obj(SEED[kind])

    def seeds(self, kind: str) -> list[Obj]:
        """Every seed file or every seed directory."""
        return [self.lab.obj(rel) for rel in SEEDS[kind]]

    def fresh(self, kind: str, rel: str) -> Obj:
        """A new file or directory REL (a directory gets a marker file), made through the mount."""
        return self.lab.make_file(rel) if kind == "file" else self.lab.make_dir(rel)

    def remove(self, obj: Obj) -> None:
        """Remove OBJ (a directory with its marker file) through the mount."""
        path = self.lab.path(obj.rel)
        if obj.identity.is_dir:
            os.unlink(path / MARKER_NAME)
            os.rmdir(path)
        else:
            os.unlink(path)

    # -- handles ------------------------------------------------------------------------
    def encode(self, obj: Obj, label: str | None = None, *, connectable: bool = False) -> Handle:
        """OBJ's handle through the transport, kept on OBJ and recorded as LABEL."""
        handle = self.lab.encode(obj, connectable=connectable)
        self.ev.encoded(label or obj.rel, handle)
        return handle

    def encode_unrecorded(self, obj: Obj) -> Handle:
        """OBJ's handle through the transport, kept on OBJ but not in the evidence: for the
        handles a scenario makes by the dozen or hundred (REUSE, LH-SIZE, the restarts),
        where one recorded with `encoded` stands for them all, and for the NFS handles a
        scenario compares with a fid it records instead."""
        return self.lab.encode(obj)

    def local_fid(self, rel: str) -> Handle:
        """REL's fid as name_to_handle_at gives it on the FUSE mount, whatever the
        transport (not recorded): what an NFS handle must carry inside."""
        return self.lab.local.encode(self.lab.path(rel))

    def encoded(self, label: str, handle: Handle) -> None:
        """Record as LABEL a handle got some other way (name_to_handle, an NFS listing)."""
        self.ev.encoded(label, handle)

    def decoded(self, label: str) -> dict[str, Any]:
        """What the decode recorded as LABEL: expected and found identity, the fd's path."""
        return self.ev.data["decodes"][label]

    @property
    def handle_record(self) -> dict[str, Any] | None:
        """The first handle recorded, as the report shows it (fields, or fields_error)."""
        return self.ev.handle

    def failed_with(self, name: str) -> None:
        """The errno or NFS status the failure stands for, when no OSError carried it."""
        self.ev.errno = name

    def wrong_object(self) -> None:
        """A handle opened another object: the cell fails at MUST level (FAIL WRONG-OBJ)."""
        self.ev.wrong_object = True

    def opened_rel(self, ident: Identity | None, rels: list[str]) -> str | None:
        """Which of RELS (or of their directories' marker files) a decode opened, by marker
        and type: a directory's marker file carries the directory's marker, yet is a file."""
        if ident is None or ident.marker is None:
            return None
        for rel in rels:
            if self.lab.markers.get(rel) == ident.marker:
                is_dir = rel in SEED_DIRS or rel == "" or self.lab.path(rel).is_dir()
                if is_dir == ident.is_dir:
                    return rel
                if is_dir and not ident.is_dir:
                    return f"{rel}/{MARKER_NAME}" if rel else MARKER_NAME
        return None

    def decode(self, obj: Obj, label: str,
               present: Callable[[], Decoded] | None = None) -> str:
        """Present OBJ's handle; record the outcome ('same', 'other' or an error name) and
        what the kernel asked the reference server meanwhile. PRESENT, for a client of the
        scenario's own (an NFSv4.1 compound, the kernel's NFS client), shows the old handle
        to the server and says what came back; by default the lab's transport does. Another
        object fails the cell at once: that is never acceptable, whatever the scenario is
        about."""
        outcome = self._decode(obj, label, present=present)
        if outcome == "other":
            seen = self.ev.data["decodes"][label]["got"]
            raise AssertionError(f"WRONG OBJECT: {label}: handle of {obj.rel} opened ino "
                                 f"{seen['st_ino']} marker {seen['marker']!r}")
        return outcome

    def decode_all(self, objs: list[Obj], what: str) -> list[str]:
        """Decode every one of OBJS (labelled by its path) before judging, so the evidence
        holds them all; then another object fails the cell, naming each."""
        outcomes = [self._decode(obj, obj.rel) for obj in objs]
        wrong = [o.rel for o, out in zip(objs, outcomes, strict=True) if out == "other"]
        if wrong:
            raise AssertionError(f"WRONG OBJECT: {what} the handles of {', '.join(wrong)} "
                                 "opened other objects")
        return outcomes

    def observe(self, obj: Obj, label: str) -> str:
        """Decode and record, without judging: for the hostile scenarios, where the server
        itself puts another object behind a handle and the question is what the kernel
        makes of it."""
        return self._decode(obj, label, judge=False)

    def _decode(self, obj: Obj, label: str, judge: bool = True,
                present: Callable[[], Decoded] | None = None) -> str:
        _, start = self.lab.trace_since(self._trace_at)
        got = present() if present is not None else self.lab.decode(obj)
        outcome = self.ev.decoded(label, obj, got)
        asked = self._asked[label] = self._kernel_requests(start)
        if asked:
            self.ev.data["decodes"][label]["kernel_asked"] = [str(r) for r in asked]
        if outcome == "other" and judge:
            self.ev.wrong_object = True
        return outcome

    def _kernel_requests(self, start: int) -> list[KernelRequest]:
        """How the kernel looked the object up again: LOOKUP / LOOKUP_HANDLE of '.' and '..'
        (with the handle, if it sent one) and what the server answered."""
        records, self._trace_at = self.lab.trace_since(start)
        return [KernelRequest.from_record(r) for r in records
                if r.get("op") in ("LOOKUP", "LOOKUP_HANDLE") and r.get("name") in (".", "..")]

    def unsent_handles(self, labels: list[str]) -> str:
        """For failed decodes of LOOKUP_HANDLE fids: the kernel's part, when it looked the
        object up by nodeid alone, i.e. sent LOOKUP_HANDLE(nodeid, '.') without the server's
        handle that the fid carries, and the server could not answer; '' otherwise."""
        bare = sorted({r.request for label in labels for r in self._asked.get(label, [])
                       if r.bare and r.found is None})
        if not bare:
            return ""
        return (f"; the kernel looked the object up by nodeid alone: {', '.join(bare[:3])} "
                "carried none of the handle bytes in the fid, so a server whose nodeids do "
                "not outlive it cannot find the object")

    def drop_caches(self) -> None:
        """Drop the kernel's caches and wait for the server's FORGETs."""
        self.lab.drop_caches()

    def require_restart(self, how: str) -> None:
        """HOW (one of RESTARTS) can be done to this server: an unmount + mount to any, a
        restart without unmount (handover, SIGKILL + takeover) to the reference server and
        to a server whose profile declares the [restart] command for it."""
        if how not in RESTARTS:
            raise ValueError(f"restart {how!r}: not one of {RESTARTS}")
        if how != "remount":
            requires.require(requires.restart_in_place(self.lab.setting, how))

    def live_restart(self, how: str, old_gone: Callable[[], None] | None = None
                     ) -> InPlaceRestart:
        """Restart the server without unmount (HOW: "handover" or "sigkill"), as the kernel
        shows it happened (same mount and connection, another process serving), recorded in
        the evidence as `restart`. OLD_GONE runs once the old serving process is gone."""
        done = self.lab.restart_in_place(how, old_gone)
        self.ev.data.setdefault("restarts", []).append(done.evidence())
        return done

    def restart_server(self, how: str, objs: list[Obj]) -> None:
        """Restart the server HOW (one of RESTARTS: unmount + mount, the /dev/fuse fd handed
        to a successor, SIGKILL + takeover), then drop caches so that every old handle has
        to be looked up again. After a remount OBJS expect the new mount's st_dev."""
        self.require_restart(how)
        if how == "remount":
            self.lab.restart()
        else:
            self.live_restart(how)
        self.drop_caches()
        if how == "remount":
            for obj in objs:
                self.lab.remounted(obj)  # a new mount: new st_dev (the inode number stays)

    def wait_trace(self, match: Callable[[dict[str, Any]], bool], since: int = 0,
                   timeout: float = 10.0) -> dict[str, Any]:
        """The first record of the reference server's trace from offset SINCE that MATCH
        accepts, waited for: the state a scenario needs, seen rather than slept for."""
        deadline = time.monotonic() + timeout * time_scale()
        offset = since
        while True:
            records, offset = self.lab.trace_since(offset)
            for r in records:
                if match(r):
                    return r
            if time.monotonic() >= deadline:
                raise AssertionError(f"the server's trace never showed what the scenario "
                                     f"waited for within {timeout:g} s")
            time.sleep(0.02)

    def roundtrip(self, obj: Obj, *, change: Callable[[], object] | None = None,
                  cold: bool = True, label: str | None = None) -> str:
        """Encode OBJ, make the CHANGE, drop caches (cold) or hold OBJ open (warm), decode."""
        kind = "dir" if obj.identity.is_dir else "file"
        if cold:
            self.encode(obj, kind)
            if change is not None:
                change()
            self.drop_caches()
            return self.decode(obj, label or "cold")
        # pinned before the encode: a dentry whose entry timed out is dropped with its
        # inode the moment nothing holds it, and a forgetful server then forgets the nodeid
        with self.lab.pinned(obj):
            self.encode(obj, kind)
            if change is not None:
                change()
            return self.decode(obj, label or "warm")

    def note(self, key: str, value: Any) -> None:
        """Add KEY: VALUE to the cell's evidence."""
        self.ev.note(key, value)

    def extra_cell(self, sid: str, variant: str, verdict: str, reason: str,
                   evidence: dict[str, Any] | None = None) -> None:
        """A cell beside this one's, same profile and transport: what an oracle the scenario
        ran (pynfs) said of one of its own codes. Recorded as SHOULD: our MUSTs gate."""
        self.ev.extra.append({"id": sid, "variant": variant, "verdict": verdict,
                              "reason": reason, "evidence": evidence or {}})

    # -- what a scenario needs, or SKIP with the reason (nfsconf/requires.py) ------------
    def require(self, need: str) -> None:
        """A need of requires.NEEDS that depends on a parameter of the scenario (declared
        ones are checked before the lab starts)."""
        requires.require(requires.NEEDS[need](self.lab.setting))

    def require_writable(self) -> None:
        """SKIP unless the server can create and remove objects."""
        self.lab.require_writable()

    def require_ref(self) -> Any:
        """The reference server's process (restarts without unmount); SKIP for others."""
        return self.lab.require_ref()

    def require_lookup_handle(self) -> dict[str, Any]:
        """The server and the kernel under test negotiated FUSE_LOOKUP_HANDLE, as the kernel
        shows it to anyone: name_to_handle_at of the seed file gives fid type 0x91
        (FILEID_FUSE_WITHOUT_PARENT), not 0x81. When it does not, the cell SKIPs with the
        reason, or FAILs if the profile claims lookup_handle: the claim is broken.

        The reference server's INIT record adds what it settled (dialect, max_handle_sz) and
        why; it is evidence, never required. One thing only it can tell: that INIT agreed and
        the kernel still encodes 0x81, a defect of the kernel that the scenario then shows.
        Returns what was seen: the fid type, and for the reference server its INIT."""
        seen: dict[str, Any] = {"dialect": None, "max_handle_sz": None}
        try:
            probe = self.local_fid(SEED["file"])
            fid_type = probe.fh_type & 0xFFFF  # without the FILEID_IS_* user flags
            seen.update(fid_type=f"{probe.fh_type:#x}", fid_bytes=len(probe.data))
            fid = f"fid type {probe.fh_type:#x}"
        except OSError as e:
            fid_type = None
            fid = f"name_to_handle_at: {errno.errorcode.get(e.errno or 0, str(e.errno))}"
            seen.update(fid_type=None, fid_error=fid)
        neg = self.lab.negotiated()  # the reference server's own INIT; None elsewhere
        if neg is not None:
            seen.update(neg)
        self.note("lookup_handle", seen)
        if fid_type == FILEID_FUSE_WITHOUT_PARENT:
            seen["dialect"] = seen["dialect"] or "fid 0x91"
            return seen
        if seen["dialect"]:
            return seen  # INIT agreed; the scenario shows what the kernel made of it
        why = f"the kernel encodes {SEED['file']} as {fid}, not 0x91 FILEID_FUSE_WITHOUT_PARENT"
        if neg is not None:
            why += f" ({neg.get('why') or 'no INIT seen'})"
        profile = self.lab.profile
        assert not profile.claims.lookup_handle, (
            f"profile {profile.name} claims lookup_handle, but LOOKUP_HANDLE was not "
            f"negotiated on a kernel that offers it: {why}")
        raise requires.Unsupported(f"LOOKUP_HANDLE not negotiated: {why}")

    def parent_left_out(self, obj: Obj, handle: Handle | None = None) -> str | None:
        """Why OBJ's handle (HANDLE, else the one last encoded for it) names no parent where
        the export asks for one, when that is the protocol's own limit; None otherwise.

        Under subtree_check knfsd asks for a connectable fid of a file; with LOOKUP_HANDLE
        that is 0x92, the child's and the parent's fuse_inode_handle (24 bytes each) with
        both server handles. Where even the smallest 0x92 (a 1-byte parent handle) cannot
        fit in what the transport's handle leaves after knfsd's header (NFSv3: 64 bytes in
        all), the kernel gives the child's 0x91 fid (the decided behaviour: fix 0010; a
        classic 0x82 fid would name the child by a nodeid a server may renumber). Without
        the parent knfsd cannot reconnect a file whose dentry is gone, so a cold decode of
        it is the same object or ESTALE, never another. NFSv4's 128-byte handles hold the
        0x92 fid: there this gives None, as for a 0x92 fid, a directory, or no_subtree_check."""
        transport = self.transport
        handle = handle or obj.handle
        if (handle is None or obj.identity.is_dir or not transport.knfsd
                or not transport.subtree_check):
            return None
        try:
            fid = decode_nfs_fh(handle.data, transport.fh_size).fid
        except HandleError:
            return None
        if not isinstance(fid, FuseFid) or fid.parent is not None:
            return None
        header = len(handle.data) - len(fid.encode())
        room = transport.fh_size - header
        smallest = -(-(len(fid.encode()) + SIZEOF_FUSE_INODE_HANDLE + 1) // 4) * 4
        if smallest <= room:
            return None  # a 0x92 fid could fit: a 0x91 here is not the protocol's doing
        return (f"subtree_check over a {transport.fh_size}-byte handle: {room} bytes after "
                f"knfsd's header, a 0x92 fid with this file's {len(fid.inode.handle)}-byte "
                f"server handle needs at least {smallest}; the kernel gave the 0x91 fid, so "
                "a cold decode is the same object or ESTALE, never another")

    def stale_by_protocol(self, obj: Obj, outcome: str, handle: Handle | None = None) -> bool:
        """Whether OUTCOME of a cold decode of OBJ is ESTALE where parent_left_out says the
        protocol leaves nothing else (recorded in the evidence when it is)."""
        if as_errno_name(outcome) != "ESTALE":
            return False
        why = self.parent_left_out(obj, handle)
        if why is not None:
            self.note("stale_by_protocol_limit", why)
        return why is not None

    def require_connectable(self, obj: Obj) -> Handle:
        """A connectable handle of OBJ; SKIP on a kernel without AT_HANDLE_CONNECTABLE
        (probed on the suite's own tmpdir, so a FUSE error is never taken for that)."""
        requires.require(requires.connectable())
        return self.encode(obj, f"{'dir' if obj.identity.is_dir else 'file'}-connectable",
                           connectable=True)


def expect_same_or(outcome: str, allowed: tuple[str, ...], what: str) -> None:
    """OUTCOME is 'same' or one of the ALLOWED errno names (an NFS status counts as the
    errno it stands for: NFS3ERR_STALE as ESTALE)."""
    assert outcome == "same" or as_errno_name(outcome) in allowed, (
        f"{what}: {outcome} (expected the same object or {', '.join(allowed)})")


def nodeid_of(part: FuseInodeHandle, given: dict[int, bytes]) -> int | None:
    """The nodeid a part of a 0x91/0x92 fid stands for: the one it carries, or for a part
    with nodeid 0 (its handle alone names the object: fix 0013) the last nodeid GIVEN
    (nodeid -> handle, in the order the server gave them) pairs with its handle — a server
    with counter nodeids gives an object a new nodeid each time it is looked up anew, and
    the newest is the one the kernel holds. None if the server never gave that handle."""
    if part.nodeid:
        return part.nodeid
    found = None
    for nodeid, h in given.items():
        if h == part.handle:
            found = nodeid
    return found
