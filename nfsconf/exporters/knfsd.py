"""knfsd in the kernel under test (the VM guest): `start_knfsd` loads the modules, brings
up nfsd, rpcbind and mountd over a tmpfs pseudo-root and ends the grace period; the `Knfsd`
it returns owns that pseudo-root and makes the exporter of each lab (`Knfsd.exporter`: one
`exportfs -i` entry below the pseudo-root, so NFSv4 sees it relative to the root and
NFSv3 mounts its full path).

It writes /etc/exports and starts NFS daemons, so it refuses to run anywhere else: in the
guest /etc and /var are throw-away overlays of the host's.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from nfsconf import process
from nfsconf.exporters import nfsd_refs
from nfsconf.mounttable import mounts

LOOPBACK = "127.0.0.1"
DEFAULT_ROOT = Path("/run/nfsconf/knfsd")

# module -> (Kconfig symbol, name in /proc/filesystems when it registers one)
KERNEL_FEATURES: dict[str, tuple[str, str | None]] = {
    "fuse": ("CONFIG_FUSE_FS", "fuse"),
    "nfsd": ("CONFIG_NFSD", "nfsd"),
    "nfs": ("CONFIG_NFS_FS", "nfs"),
    "nfsv3": ("CONFIG_NFS_V3", None),
    "nfsv4": ("CONFIG_NFS_V4", "nfs4"),
}


PIPEFS = "/var/lib/nfs/rpc_pipefs"
CLD_STORAGE = "/var/lib/nfs/nfsdcld"
AT_FDCWD = -100
MAX_HANDLE_SZ = 128


class GuestSetupError(RuntimeError):
    """knfsd or a mount could not be set up; the message names the missing piece."""


@dataclass
class Knfsd:
    root: Path
    timings: dict[str, float] = field(default_factory=dict)
    grace_ended: bool = False
    _procs: list[subprocess.Popen[bytes]] = field(default_factory=list, repr=False)
    _logs: dict[int, IO[bytes]] = field(default_factory=dict, repr=False)  # pid -> output
    _mounts: list[Path] = field(default_factory=list, repr=False)
    _mounted_nfsd: bool = False
    serving_since: float | None = None  # the guest's uptime when the daemons served
    _serving: threading.Thread | None = field(default=None, repr=False)
    _failure: BaseException | None = field(default=None, repr=False)
    refs: nfsd_refs.NfsdRefs = field(default_factory=nfsd_refs.NfsdRefs, repr=False)

    @property
    def pseudo(self) -> Path:
        """The NFSv4 pseudo-root (fsid=0): the exports' binds and the labs live below it."""
        return self.root / "pseudo"

    def exporter(self, path: Path, fsid: int, subtree_check: bool) -> KnfsdExporter:
        """An exporter of PATH (below the pseudo-root) by this knfsd, once it serves."""
        self.wait()
        return KnfsdExporter(path, fsid, subtree_check, v4root=self.pseudo, refs=self.refs)

    def _serve(self, threads: int) -> None:
        try:
            _bring_up(self, threads)
            self.serving_since = _uptime()
        except BaseException as e:  # told to whoever waits for it
            self._failure = e

    def wait(self) -> None:
        """Until the daemons started in the background serve (or failed to)."""
        if self._serving is not None:
            self._serving.join()
        if self._failure is not None:
            raise GuestSetupError(f"knfsd did not start: {self._failure}")

    def pids(self) -> list[int]:
        return [p.pid for p in self._procs]

    def stop(self) -> None:
        """Stop nfsd threads and our daemons and undo the mounts; errors are collected."""
        if self._serving is not None:
            self._serving.join()  # what it started is in _procs and _mounts once it ends
        errors = []
        for argv in (["rpc.nfsd", "0"], ["exportfs", "-ua", "-f"]):
            try:
                _check(argv)
            except GuestSetupError as e:
                errors.append(str(e))
        for p in reversed(self._procs):
            process.stop(p)
        self._procs.clear()
        for log in self._logs.values():
            log.close()
        self._logs.clear()
        for m in reversed(self._mounts):
            try:
                _check(["umount", str(m)])
            except GuestSetupError as e:
                errors.append(str(e))
        self._mounts.clear()
        if self._mounted_nfsd:
            with contextlib.suppress(GuestSetupError):
                _check(["umount", "/proc/fs/nfsd"])
            self._mounted_nfsd = False
        if errors:
            raise GuestSetupError("knfsd teardown: " + "; ".join(errors))


def ensure_guest() -> None:
    try:
        cmdline = Path("/proc/cmdline").read_text()
    except OSError:
        cmdline = ""
    # both engines put the flag on the guest's kernel command line (vm/engine.py)
    if "nfsconf.guest=1" not in cmdline.split() and os.environ.get("NFSCONF_GUEST_OK") != "1":
        raise GuestSetupError(
            "refusing to run outside an nfsconf guest (no nfsconf.guest=1 on the kernel "
            "command line): this rewrites /etc/exports and starts NFS daemons (run it "
            "through nfsconf.vm.runner)"
        )


def load_modules(names: Sequence[str] = tuple(KERNEL_FEATURES)) -> dict[str, str]:
    """modprobe each name; returns name -> 'module' | 'builtin'. Missing ones raise together."""
    state: dict[str, str] = {}
    missing = []
    for name in names:
        config, fsname = KERNEL_FEATURES.get(name, (f"module {name}", None))
        try:
            _check(["modprobe", name])
            state[name] = "module" if Path(f"/sys/module/{name}/initstate").exists() else "builtin"
        except GuestSetupError as e:
            if fsname is not None and fsname in _filesystems():
                state[name] = "builtin"
            else:
                missing.append(f"{config} ({e})")
    if missing:
        release = os.uname().release
        raise GuestSetupError(f"kernel {release} lacks: " + "; ".join(missing))
    for name in names:
        fsname = KERNEL_FEATURES.get(name, ("", None))[1]
        if fsname is not None and fsname not in _filesystems():
            raise GuestSetupError(f"{name} loaded but no {fsname} in /proc/filesystems")
    return state


def start_knfsd(*, threads: int = 4, root: Path = DEFAULT_ROOT,
                background: bool = False) -> Knfsd:
    """Mount the pseudo-root, then bring up rpcbind, its export, mountd and nfsd, and end
    the v4 grace period. Directories are exported later, each by its exporter
    (Knfsd.exporter). BACKGROUND: return once the pseudo-root is there (labs can be made
    in it) and bring the daemons up meanwhile; the first exporter waits for them."""
    ensure_guest()
    if _is_mounted(root / "pseudo", "tmpfs"):
        raise GuestSetupError(f"knfsd is already running over {root / 'pseudo'}")
    k = Knfsd(root=root)
    try:
        _pseudo_root(k)
        if background:
            k._serving = threading.Thread(target=k._serve, args=(threads,), daemon=True)
            k._serving.start()
        else:
            _bring_up(k, threads)
            k.serving_since = _uptime()
    except BaseException:
        try:
            k.stop()
        except GuestSetupError:
            pass
        raise
    return k


def _pseudo_root(k: Knfsd) -> None:
    flags = Path("/sys/class/net/lo/flags")
    if flags.exists() and not int(flags.read_text(), 16) & 0x1:  # IFF_UP
        raise GuestSetupError("the guest's loopback is down: the engine brings it up with "
                              "ip(8); install iproute2 on the host")
    with _Timer(k.timings)("pseudo_root"):
        pseudo = k.pseudo
        pseudo.mkdir(parents=True, exist_ok=True)
        # The labs live here too. A tmpfs's size is only a limit, and a server that keeps a
        # free-space reserve (mergerfs: minfreespace=4G) refuses creates on the default one
        # (half the guest's 1 GiB) where the host's disks would take them.
        _check(["mount", "-t", "tmpfs", "-o", "mode=0755,size=64g", "nfsconf-pseudo",
                str(pseudo)])
        k._mounts.append(pseudo)
        Path("/etc/exports").write_text(
            f"{pseudo} {LOOPBACK}(rw,fsid=0,crossmnt,no_subtree_check,no_root_squash,insecure)\n")
        exports_d = Path("/etc/exports.d")
        if exports_d.is_dir():
            for f in exports_d.glob("*.exports"):
                f.unlink()  # only the guest's overlay copy


def _bring_up(k: Knfsd, threads: int) -> None:
    t = _Timer(k.timings)
    with t("modules"):
        load_modules(("nfsd",))
    with t("nfsd_fs"):
        # rpc.mountd reads the mount table through /etc/mtab (setmntent) and segfaults on
        # the first MOUNT where a minimal root has none (seen: a fresh mmdebstrap root);
        # the guest's /etc is its own
        mtab = Path("/etc/mtab")
        if not mtab.exists() and not mtab.is_symlink():
            mtab.symlink_to("../proc/self/mounts")
        if not _is_mounted(Path("/proc/fs/nfsd"), "nfsd"):
            _check(["mount", "-t", "nfsd", "nfsd", "/proc/fs/nfsd"])
            k._mounted_nfsd = True
        for d in ("/run/rpcbind", "/var/lib/nfs/v4recovery", PIPEFS, CLD_STORAGE):
            Path(d).mkdir(parents=True, exist_ok=True)
        if not _is_mounted(Path(PIPEFS), "rpc_pipefs"):
            _check(["mount", "-t", "rpc_pipefs", "rpc_pipefs", PIPEFS])
            k._mounts.append(Path(PIPEFS))
    with t("nfsdcld"):
        # Kernels without CONFIG_NFSD_LEGACY_CLIENT_TRACKING (Debian 7.x) track NFSv4
        # clients only through nfsdcld; without it nfsd start stalls on a timed-out upcall
        # and v4_end_grace answers EBUSY. Older kernels use it too when it runs.
        if shutil.which("nfsdcld"):
            _daemon(k, ["nfsdcld", "-F", "-p", PIPEFS, "-s", CLD_STORAGE])
        # Safety net if ending grace fails anyway: 10 s (the minimum) instead of 90 s.
        _write_if_exists(Path("/proc/fs/nfsd/nfsv4gracetime"), "10\n")
    with t("rpcbind"):
        _wait_port(111, _daemon(k, ["rpcbind", "-f", "-w"]), "rpcbind", k._logs)
    with t("exportfs"):
        _check(["exportfs", "-ra"])
    with t("mountd"):
        _wait_rpc("mountd", _daemon(k, ["rpc.mountd", "-F"]), k._logs)
    with t("nfsd"):
        _check(["rpc.nfsd", str(threads)])
        _wait_port(2049, None, "nfsd", k._logs)
    with t("end_grace"):
        k.grace_ended = _end_grace()


def _end_grace(timeout: float = 5.0) -> bool:
    """End the NFSv4 grace period now; True once it is over.

    Reading the file says whether grace has ended. Newer kernels answer a write with EBUSY
    both when grace is already over (with nfsdcld and no clients to reclaim, nfsd skips it)
    and while client tracking is not up yet, so a write is retried until the read says Y.
    """
    grace = Path("/proc/fs/nfsd/v4_end_grace")
    if not grace.exists():
        return False
    deadline = time.monotonic() + timeout
    while True:
        if grace.read_text().strip() == "Y":
            return True
        try:
            grace.write_text("Y\n")
        except OSError as e:
            if e.errno != errno.EBUSY:
                return False
        # The write only schedules the end (laundromat) on newer kernels: read back.
        if grace.read_text().strip() == "Y":
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)


def _write_if_exists(path: Path, text: str) -> None:
    if path.exists():
        path.write_text(text)


def nfs_mount_argv(version: str, v3_path: str, v4_path: str, mountpoint: Path | str,
                   options: Sequence[str] = ()) -> list[str]:
    """The kernel client's mount command: NFSv3 ("3", nolock) mounts V3_PATH through MOUNT,
    NFSv4 ("4", "4.0", "4.1", "4.2") V4_PATH below the pseudo-root."""
    if version == "3":
        src, opts = f"{LOOPBACK}:{v3_path}", ["vers=3", "nolock", *options]
    elif version in ("4", "4.0", "4.1", "4.2"):
        src, opts = f"{LOOPBACK}:{v4_path}", [f"vers={version}", *options]
    else:
        raise ValueError(f"unknown NFS version {version!r}")
    return ["mount", "-t", "nfs", "-o", ",".join(opts), src, str(mountpoint)]


class _Timer:
    def __init__(self, into: dict[str, float]) -> None:
        self.into = into

    def __call__(self, name: str) -> _Timer:
        self.name = name
        return self

    def __enter__(self) -> None:
        self.start = time.monotonic()

    def __exit__(self, *exc: object) -> None:
        self.into[self.name] = round(time.monotonic() - self.start, 3)


def _check(argv: Sequence[str]) -> str:
    return process.checked(argv, error=GuestSetupError, timeout=60,
                           hint=" (install it on the host)")


def _daemon(k: Knfsd, argv: list[str]) -> subprocess.Popen[bytes]:
    """Start one of K's daemons, its output in a file K closes when it stops."""
    # A file, not a pipe: a foreground daemon that logs every request would block on a
    # full pipe that nobody reads.
    log = tempfile.TemporaryFile()
    try:
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    except FileNotFoundError:
        log.close()
        raise GuestSetupError(f"{argv[0]} not found: apt-get install nfs-kernel-server") from None
    k._procs.append(p)
    k._logs[p.pid] = log
    return p


def _died(p: subprocess.Popen[bytes] | None, what: str, logs: dict[int, IO[bytes]]) -> None:
    if p is not None and p.poll() is not None:
        err = ""
        log = logs.get(p.pid)
        if log is not None:
            log.seek(0)
            err = log.read().decode(errors="replace")
        raise GuestSetupError(f"{what} exited {p.returncode}: {err.strip()}")


def _wait_port(port: int, p: subprocess.Popen[bytes] | None, what: str,
               logs: dict[int, IO[bytes]], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while True:
        _died(p, what, logs)
        try:
            with socket.create_connection((LOOPBACK, port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise GuestSetupError(f"{what} not listening on {port} after {timeout} s") from None
            time.sleep(0.05)


def _wait_rpc(program: str, p: subprocess.Popen[bytes], logs: dict[int, IO[bytes]],
              timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while True:
        _died(p, program, logs)
        try:
            if f" {program}" in _check(["rpcinfo", "-p", LOOPBACK]):
                return
        except GuestSetupError:
            pass  # rpcbind not answering yet
        if time.monotonic() > deadline:
            raise GuestSetupError(f"{program} not registered with rpcbind after {timeout} s")
        time.sleep(0.05)


def _filesystems() -> set[str]:
    return {line.split()[-1] for line in Path("/proc/filesystems").read_text().splitlines() if line}


def _is_mounted(mountpoint: Path, fstype_prefix: str) -> bool:
    mp = str(mountpoint)
    return any(m.mountpoint == mp and m.fstype.startswith(fstype_prefix) for m in mounts())


def _running(pid: int) -> bool:
    return process.running(pid)  # our own zombie children do not count as running


def _uptime() -> float:
    return float(Path("/proc/uptime").read_text().split()[0])




class KnfsdExporter:
    """knfsd in this kernel (the guest of the knfsd transport): one `exportfs -i` entry with
    a fixed fsid, so handles stay valid across unexport/export around a server restart."""

    knfsd = True

    def __init__(self, path: Path, fsid: int, subtree_check: bool, v4root: Path,
                 refs: nfsd_refs.NfsdRefs | None = None) -> None:
        self.path = path
        self.refs = refs or nfsd_refs.NfsdRefs()
        self.subtree_check = subtree_check
        self.v4root = v4root
        self.options = (f"rw,no_root_squash,insecure,sync,fsid={fsid},"
                        + ("subtree_check" if subtree_check else "no_subtree_check"))

    def _exportfs(self, *args: str) -> None:
        def refused(message: str) -> OSError:
            # a FUSE server without export support is refused here, not at the first handle
            code = errno.EOPNOTSUPP if "does not support NFS export" in message else errno.EIO
            return OSError(code, message)

        process.checked(["exportfs", *args], error=refused, timeout=30)

    def start(self) -> None:
        self._exportfs("-i", "-o", self.options, f"{LOOPBACK}:{self.path}")

    def stop(self) -> None:
        # -f: drop the kernel's export cache too (it pins the mount), in the same exportfs
        # run (a process costs ~60 ms under User-Mode Linux)
        self._exportfs("-u", "-f", f"{LOOPBACK}:{self.path}")

    def settle(self, *, purge: bool = False) -> str | None:
        return self.refs.settle(purge=purge)

    nfs_port = 2049
    mount_port = 0  # from the portmapper

    @property
    def mount_path(self) -> str:
        return str(self.path)

    @property
    def v4_path(self) -> str:
        """NFSv4 sees exports below the fsid=0 pseudo-root."""
        return "/" + os.path.relpath(self.path, self.v4root)
