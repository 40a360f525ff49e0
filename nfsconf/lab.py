"""A lab: one FUSE server of a profile mounted over a fresh source built from the seed tree,
with every object the suite made and what it must decode to."""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import secrets
import shutil
import subprocess
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nfsconf import process, requires
from nfsconf.fuse.trace import trace_from
from nfsconf.mounttable import MountEntry, abort_connection, deferred_signals, fuse_mount_at
from nfsconf.servers.inplace import InPlaceRestart, same_mount, served_by
from nfsconf.servers.mount import ServerProcess
from nfsconf.servers.profile import Profile
from nfsconf.servers.refserver import RefServerProcess
from nfsconf.transports.base import MARKER_NAME, Decoded, Handle, Identity, Obj, Transport
from nfsconf.transports.local import LocalTransport, fd_identity

if TYPE_CHECKING:
    from nfsconf.exporters.knfsd import Knfsd

# The seed tree every source is built from: read-only servers can only serve these objects.
SEED_DIRS = ("d0", "d1", "d1/sub", "d2")
SEED_FILES = tuple(f"d0/f{i}" for i in range(8)) + ("d1/sub/g0", "d2/h0", "top")

TIME_SCALE = "NFSCONF_TIME_SCALE"


def time_scale() -> float:
    """How much longer than on the host a server may take to start: the knfsd lane's guest
    says, by its engine (qemu's TCG: a Python server's imports over 9p take seconds; UML
    runs at host speed)."""
    try:
        return max(1.0, float(os.environ.get(TIME_SCALE, "1")))
    except ValueError:
        return 1.0


class LabSetupError(RuntimeError):
    """The lab could not be made on this kernel: which call, on which server, which errno."""


class Lab:
    def __init__(self, profile: Profile, transport: str = "local",
                 base: Path | None = None, knfsd: Knfsd | None = None) -> None:
        self.profile = profile
        self.transport_name = transport
        self.knfsd = knfsd  # the guest's knfsd, for the knfsd transports
        self.root = Path(tempfile.mkdtemp(prefix=f"nfsconf-{profile.name}-", dir=base))
        self.mnt = self.root / "mnt"
        self.token = secrets.token_hex(4)
        self._serial = itertools.count()
        self.markers: dict[str, str] = {}
        self.server: ServerProcess | RefServerProcess | None = None
        # the wall clock's seconds from the current server instance's start to its mount:
        # whatever clock reading the server took at start lies within them
        self.instance_seconds = (0, 0)
        self._values: dict[str, str] = {}
        # the local transport always exists: drops, identity by name, exportfs-level checks
        self.local = LocalTransport(self.mnt)
        self.transport: Transport = self.local
        self.notes: list[str] = []
        # seconds spent per phase (setup, mount, encode, drop_caches, decode, unmount): where
        # a matrix's time goes (`nfsconf bench matrix`)
        self.timings: dict[str, float] = {}

    @contextlib.contextmanager
    def timed(self, phase: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.timings[phase] = self.timings.get(phase, 0.0) + time.perf_counter() - started

    # -- life cycle -------------------------------------------------------------------
    def start(self) -> Lab:
        self.mnt.mkdir()
        with self.timed("setup"):
            self._values = self._build_source()
        try:
            self._spawn()
            with self.timed("setup"):
                self._check_seed()
        except BaseException:
            self.stop()
            raise
        return self

    def _check_seed(self) -> None:
        """Every seed object must be reachable by name through the mount: if the kernel
        under test cannot even look them up, say so, not a Python error of some scenario."""
        for rel in (*SEED_DIRS, *SEED_FILES):
            try:
                os.stat(self.path(rel))
            except OSError as e:
                name = errno.errorcode.get(e.errno or 0, str(e.errno))
                raise LabSetupError(
                    f"lab set-up on {self.profile.name}: stat {rel} through the FUSE mount "
                    f"gave {name} ({e.strerror}), though the source holds it; "
                    + (self._refused_replies() or "the kernel's LOOKUP or the server's "
                       "answer to it failed")) from None

    def _refused_replies(self) -> str:
        """What the reference server's trace says the kernel did not accept."""
        records, _ = self.trace_since()
        asked = {r["unique"]: r for r in records if "op" in r and "unique" in r}
        out = []
        for ev in (r for r in records if r.get("event") == "reply-error"):
            req = asked.get(ev.get("unique"), {})
            out.append(f"the kernel refused the server's {ev.get('bytes')}-byte reply to "
                       f"{req.get('op', '?')} {req.get('name', '')!r} (write: {ev['errno']})")
        return "; ".join(out[:2])

    def _spawn(self, **knobs: str) -> None:
        """A new server instance on the same source and mountpoint."""
        spawned = int(time.time())
        if self.profile.refserver is not None:
            self.server = RefServerProcess({**self.profile.refserver, **knobs},
                                           Path(self._values["source"]), self.mnt, self.root)
        else:
            argv = self.profile.argv(mountpoint=str(self.mnt), **self._values)
            self.server = ServerProcess(argv, self.mnt, self.root / "server.log")
        with self.timed("mount"):
            self._mounted(self.server.start(self.profile.mount_timeout * time_scale()))
        self.instance_seconds = (spawned, int(time.time()))

    def _mounted(self, entry: MountEntry) -> None:
        self.local.connection = entry.connection
        self.local.open()
        if self.transport_name != "local":
            from nfsconf.transports.nfs import make_transport

            self.transport = make_transport(self.transport_name, self.mnt, knfsd=self.knfsd)
        self.transport.open()

    def _unmount(self) -> list[str]:
        with self.timed("unmount"):
            return self._close_and_stop()

    def _close_and_stop(self) -> list[str]:
        for t in {id(self.transport): self.transport, id(self.local): self.local}.values():
            try:
                t.close()
            except Exception as e:  # the unmount must happen whatever the exporter did
                self.notes.append(f"closing transport {t.name}: {e}")
        return self.server.stop() if self.server is not None else []

    def stop(self) -> list[str]:
        """Unmount, end the server, remove the lab's files. Returns what had to be forced
        over the lab's life (restarts and transport teardowns included): cell evidence."""
        with deferred_signals():
            notes = self._unmount()
            if fuse_mount_at(self.mnt) is None:
                shutil.rmtree(self.root, ignore_errors=True)
            else:
                notes.append(f"{self.mnt} still mounted; left {self.root} in place")
            self.notes.extend(notes)
        return list(self.notes)

    def abort(self) -> list[str]:
        """Abort the FUSE connection: everything blocked on the mount fails with ENOTCONN."""
        entry = fuse_mount_at(self.mnt)
        if entry is None:
            return []
        if abort_connection(entry.connection):
            return [f"aborted fuse connection {entry.connection} ({self.profile.name})"]
        return [f"could not abort fuse connection {entry.connection}"]

    def restart(self, **knobs: str) -> None:
        """Unmount and mount again on the same source: a server restart as NFS sees one.
        KNOBS change the reference server's behaviour for the new instance."""
        assert self.server is not None
        self.notes.extend(self._unmount())
        self._spawn(**knobs)

    def restart_in_place(self, how: str, old_gone: Callable[[], None] | None = None
                         ) -> InPlaceRestart:
        """Restart the server without unmount, HOW "handover" (graceful) or "sigkill" (the
        serving process SIGKILLed, a successor takes over): the reference server by its fd
        holder, any other by its profile's [restart] command. Either way the kernel must
        show the same mount and connection, the old process gone and the successor serving
        (nfsconf/servers/inplace.py). OLD_GONE runs once the old process is gone (the
        reference server: once the restart is done)."""
        requires.require(requires.restart_in_place(self.setting, how))
        assert self.server is not None
        timeout = self.profile.mount_timeout * time_scale()
        if isinstance(self.server, RefServerProcess):
            before = fuse_mount_at(self.mnt)
            assert before is not None
            started = time.perf_counter()
            old = self.server.pid or 0
            new = self.server.live_restart() if how == "handover" else \
                self.server.kill_and_takeover()
            if old_gone is not None:
                old_gone()
            entry = same_mount(before, self.mnt)
            waited = served_by(new, entry, self.mnt, timeout)
            return InPlaceRestart(how, old, new, entry.mount_id, entry.connection,
                                  round(time.perf_counter() - started, 3), round(waited, 3))
        key = requires.IN_PLACE[how]
        argv = self.profile.restart_argv(key, mountpoint=str(self.mnt),
                                         pid=str(self.server.pid), **self._values)
        assert argv is not None
        return self.server.restart_in_place(how, argv, timeout, old_gone)

    def backing_file(self, rel: str) -> Path | None:
        """The source's own file behind REL, for a directory source (overlay: the layer
        holding it); None for an image, whose files exist only inside the server."""
        if self.profile.source == "dir":
            return Path(self._values["source"]) / rel
        if self.profile.source == "overlay":
            upper = Path(self._values["upper"]) / rel
            return upper if upper.exists() else Path(self._values["lower"]) / rel
        return None

    @property
    def setting(self) -> requires.Setting:
        return requires.Setting(self.profile, self.transport_name)

    def require_ref(self) -> RefServerProcess:
        """The reference server behind this lab (a scenario declares needs=("refserver",)
        so other profiles SKIP before anything mounts)."""
        requires.require(requires.refserver(self.setting))
        assert isinstance(self.server, RefServerProcess)
        return self.server

    @property
    def trace_path(self) -> Path | None:
        return self.server.trace_path if isinstance(self.server, RefServerProcess) else None

    def trace_since(self, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
        """The reference server's trace records from OFFSET on (none for other servers)."""
        return trace_from(self.trace_path, offset)

    def negotiated(self) -> dict[str, Any] | None:
        """What the current server instance's INIT settled (None for other servers): the
        protocol minor, the LOOKUP_HANDLE dialect and why, max_handle_sz."""
        records, _ = self.trace_since()
        inits = [r for r in records if r.get("op") == "INIT" and "reply" in r]
        if not inits:
            return None
        last = inits[-1]
        return {"minor": last["reply"].get("minor"),
                "dialect": last["reply"].get("lookup_handle"),
                "max_handle_sz": last["reply"].get("max_handle_sz"),
                "why": (last.get("lookup_handle") or {}).get("why", "")}

    def __enter__(self) -> Lab:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- sources ----------------------------------------------------------------------
    def _write_seed(self, top: Path) -> None:
        top.mkdir(parents=True, exist_ok=True)
        (top / MARKER_NAME).write_text(self._new_marker(""))
        for d in SEED_DIRS:
            (top / d).mkdir(parents=True, exist_ok=True)
            (top / d / MARKER_NAME).write_text(self._new_marker(d))
        for f in SEED_FILES:
            (top / f).write_text(self._new_marker(f))

    def _build_source(self) -> dict[str, str]:
        kind = self.profile.source
        seed = self.root / ("lower" if kind == "overlay" else "source")
        self._write_seed(seed)
        work = self.root / "work"
        work.mkdir()
        values = {"source": str(seed), "work": str(work), "lower": "", "upper": ""}
        if kind == "overlay":
            (self.root / "upper").mkdir()
            values.update(lower=str(seed), upper=str(self.root / "upper"))
        elif kind == "squashfs":
            image = self.root / "seed.sqfs"
            subprocess.run(["mksquashfs", str(seed), str(image), "-quiet", "-noappend",
                            "-no-progress"], check=True, capture_output=True)
            values["source"] = str(image)
        elif kind == "zip":
            image = self.root / "seed.zip"
            with zipfile.ZipFile(image, "w") as z:
                for path in sorted(seed.rglob("*")):
                    z.write(path, path.relative_to(seed).as_posix())
            values["source"] = str(image)
        elif kind == "tar":
            image = self.root / "seed.tar"
            with tarfile.open(image, "w") as t:
                for path in sorted(seed.iterdir()):
                    t.add(path, path.name)
            values["source"] = str(image)
        return values

    def _new_marker(self, rel: str) -> str:
        marker = f"nfsconf {self.token} #{next(self._serial)} {rel}\n"
        self.markers[rel] = marker
        return marker

    # -- objects ----------------------------------------------------------------------
    def path(self, rel: str) -> Path:
        return self.mnt / rel if rel else self.mnt

    def require_writable(self) -> None:
        requires.require(requires.writable(self.setting))

    def identity_of(self, rel: str) -> Identity:
        """What REL is now, reached by name through the mount."""
        fd = os.open(self.path(rel), os.O_RDONLY)
        try:
            return fd_identity(fd)
        finally:
            os.close(fd)

    def obj(self, rel: str) -> Obj:
        return Obj(rel, self.identity_of(rel))

    def make_file(self, rel: str) -> Obj:
        self.require_writable()
        with open(self.path(rel), "x") as f:
            f.write(self._new_marker(rel))
        return self.obj(rel)

    def make_dir(self, rel: str) -> Obj:
        self.require_writable()
        self.path(rel).mkdir()
        (self.path(rel) / MARKER_NAME).write_text(self._new_marker(rel))
        return self.obj(rel)

    @contextlib.contextmanager
    def pinned(self, obj: Obj) -> Iterator[None]:
        """Hold OBJ open: its inode stays cached whatever drops caches meanwhile (another
        process of this machine may), so a warm decode really is warm."""
        fd = os.open(self.path(obj.rel), os.O_RDONLY)
        try:
            yield
        finally:
            os.close(fd)

    def remounted(self, obj: Obj) -> None:
        """After a remount: expect the new mount's st_dev, learnt from the mount root alone,
        so the objects themselves stay out of the cache until their handles are decoded."""
        dev = os.stat(self.mnt).st_dev
        obj.identity = Identity(obj.identity.st_ino, dev, obj.identity.is_dir,
                                obj.identity.marker)

    def refresh(self, obj: Obj) -> None:
        """After a restart the mount has a new st_dev (and maybe new inode numbers): expect
        what the name reaches now, with the marker written at setup."""
        now = self.identity_of(obj.rel)
        obj.identity = Identity(now.st_ino, now.st_dev, obj.identity.is_dir, obj.identity.marker)

    # -- handles ----------------------------------------------------------------------
    def encode(self, obj: Obj, *, connectable: bool = False) -> Handle:
        with self.timed("encode"):
            obj.handle = self.transport.encode(self.path(obj.rel), connectable=connectable)
        return obj.handle

    def decode(self, obj: Obj) -> Decoded:
        assert obj.handle is not None, "encode first"
        with self.timed("decode"):
            return self.transport.decode(obj.handle)

    def drop_caches(self) -> None:
        with self.timed("drop_caches"):
            self.transport.settle(purge=True)  # a file knfsd keeps open pins its inode
            self.local.drop_caches()
            pid = self.server.pid if self.server is not None else None
            if pid is not None:
                busy = process.wait_quiet(pid, 2.0 * time_scale())
                if busy:  # a server that spins: the decode may still meet its old state
                    self.notes.append(f"drop_caches: server threads {busy} still running "
                                      "after the FORGETs were read")
