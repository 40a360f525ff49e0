"""The knfsd-over-FUSE smoke, run inside a VM by the VM tests: FUSE mount -> knfsd (two
export variants) -> kernel NFS client v3 and v4.2, with evidence as JSON.

    python -m tests.guest_probe probe --out OUT.json --marker M   (in the guest)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from nfsconf import process
from nfsconf.exporters.knfsd import (
    LOOPBACK,
    GuestSetupError,
    Knfsd,
    _check,
    _is_mounted,
    _running,
    _Timer,
    _uptime,
    ensure_guest,
    load_modules,
    nfs_mount_argv,
    start_knfsd,
)
from nfsconf.mounttable import mounts
from nfsconf.transports.local import name_to_handle


@dataclass(frozen=True)
class Export:
    """One export of the probe's FUSE mount: a bind mount below knfsd's pseudo-root, so the
    same mount is exported twice, with and without subtree_check."""

    path: Path  # the FUSE mountpoint
    fsid: int  # knfsd refuses FUSE without fsid=
    name: str  # the bind's name below the pseudo-root: NFSv4 sees /<name>
    subtree_check: bool = False

    def line(self, bind: Path) -> str:
        opts = ["rw", "no_root_squash", "sync", "insecure", f"fsid={self.fsid}",
                "subtree_check" if self.subtree_check else "no_subtree_check"]
        return f"{bind} {LOOPBACK}({','.join(opts)})"


def exports_for(path: Path, fsid: int, prefix: str = "fuse") -> list[Export]:
    """The two variants of one directory: fsid N without, fsid N+1 with subtree_check."""
    return [Export(path, fsid, f"{prefix}-nosubtree", subtree_check=False),
            Export(path, fsid + 1, f"{prefix}-subtree", subtree_check=True)]


def export_all(knfsd: Knfsd, exports: list[Export], mounted: list[Path]) -> None:
    """Bind each export below the pseudo-root and export it beside the root's line."""
    lines = []
    for e in exports:
        bind = knfsd.pseudo / e.name
        bind.mkdir()
        _check(["mount", "--bind", str(e.path), str(bind)])
        mounted.append(bind)
        lines.append(e.line(bind))
    with open("/etc/exports", "a") as f:
        f.write("\n".join(lines) + "\n")
    _check(["exportfs", "-ra"])


def mount_nfs(knfsd: Knfsd, name: str, version: str, mountpoint: Path) -> None:
    """Mount export NAME with the kernel client: "3" (nolock) or "4", "4.1", "4.2"."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    _check(nfs_mount_argv(version, str(knfsd.pseudo / name), f"/{name}", mountpoint))


def umount(mountpoint: Path) -> None:
    _check(["umount", str(mountpoint)])


def start_fuse(
    argv: Sequence[str], mountpoint: Path, *, timeout: float = 15.0
) -> subprocess.Popen[bytes]:
    """Start a FUSE server that stays in the foreground and wait until it has mounted."""
    mountpoint = Path(mountpoint)
    mountpoint.mkdir(parents=True, exist_ok=True)
    # Output goes to a file, not a pipe: nobody reads a pipe while the server runs, and a
    # chatty server (-d) would block on a full one.
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    deadline = time.monotonic() + timeout
    while not _is_mounted(mountpoint, "fuse"):
        if proc.poll() is not None:
            log.seek(0)
            out = log.read().decode(errors="replace").strip()
            raise GuestSetupError(f"{argv[0]} exited {proc.returncode} before mounting: {out}")
        if time.monotonic() > deadline:
            process.stop(proc)
            raise GuestSetupError(f"{argv[0]} did not mount {mountpoint} within {timeout} s")
        time.sleep(0.05)
    return proc


def stop_fuse(proc: subprocess.Popen[bytes], mountpoint: Path) -> None:
    if _is_mounted(Path(mountpoint), "fuse"):
        try:
            _check(["fusermount3", "-u", str(mountpoint)])
        except GuestSetupError:
            try:
                _check(["umount", str(mountpoint)])
            except GuestSetupError as e:
                process.stop(proc)
                raise GuestSetupError(f"cannot unmount {mountpoint}: {e}") from None
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.stop(proc)


# --- handles ------------------------------------------------------------------------------


def nfs_client_server_fh(raw: bytes) -> bytes:
    """The server's file handle inside a handle the Linux NFS client encoded.

    fs/nfs/export.c: u32 fileid high, u32 fileid low, u32 i_mode type, then struct nfs_fh
    (u16 size in host order, then the bytes the server handed out).
    """
    if len(raw) < 14:
        raise ValueError(f"NFS client handle too short: {len(raw)} bytes")
    size = int.from_bytes(raw[12:14], sys.byteorder)
    if 14 + size > len(raw):
        raise ValueError(f"NFS client handle claims {size} fh bytes, has {len(raw) - 14}")
    return raw[14 : 14 + size]


# --- probe: the knfsd smoke run ------------------------------------------------------------


def probe(marker: str, fsid: int, fuse_cmd: Sequence[str], root: Path) -> dict[str, object]:
    """FUSE mount -> knfsd (two export variants) -> kernel client v3 and v4.2, with evidence.

    `fuse_cmd` is a foreground FUSE server; "{src}" and "{mnt}" in it are replaced.
    """
    ensure_guest()
    res: dict[str, object] = {"release": os.uname().release, "uptime_start": _uptime()}
    timings: dict[str, float] = {}
    res["timings"] = timings
    t = _Timer(timings)
    src, mnt = root / "src", root / "fuse"
    mounted: list[Path] = []
    binds: list[Path] = []  # below knfsd's pseudo-root: gone before knfsd stops
    fuse = None
    knfsd = None
    try:
        with t("modules"):
            res["modules"] = load_modules()
        src.mkdir(parents=True, exist_ok=True)
        _check(["mount", "-t", "tmpfs", "nfsconf-src", str(src)])
        mounted.append(src)
        (src / "d").mkdir()
        (src / "d" / "file.txt").write_text(marker)
        with t("fuse"):
            argv = [a.replace("{src}", str(src)).replace("{mnt}", str(mnt)) for a in fuse_cmd]
            fuse = start_fuse(argv, mnt)
        file_h = name_to_handle(mnt / "d" / "file.txt")
        dir_h = name_to_handle(mnt / "d")
        res["fuse_file"] = {"type": file_h.fh_type, "hex": file_h.data.hex()}
        res["fuse_dir"] = {"type": dir_h.fh_type, "hex": dir_h.data.hex()}
        with t("knfsd"):
            knfsd = start_knfsd()
            export_all(knfsd, exports_for(mnt, fsid), binds)
        res["knfsd_timings"] = knfsd.timings
        res["grace_ended"] = knfsd.grace_ended
        clients = []
        for name, version in (
            ("fuse-nosubtree", "3"),
            ("fuse-nosubtree", "4.2"),
            ("fuse-subtree", "3"),
        ):
            mp = root / f"mnt-{name}-v{version}"
            with t(f"mount_{name}_v{version}"):
                mount_nfs(knfsd, name, version, mp)
            mounted.append(mp)
            entry: dict[str, object] = {"export": name, "version": version}
            entry["content"] = (mp / "d" / "file.txt").read_text()
            client = name_to_handle(mp / "d" / "file.txt")
            entry["client_handle_type"] = client.fh_type
            entry["server_fh"] = nfs_client_server_fh(client.data).hex()
            clients.append(entry)
        res["clients"] = clients
        # knfsd loads exports lazily (mountd upcalls), so read the table after the mounts.
        res["exports"] = Path("/proc/fs/nfsd/exports").read_text()
        # A write through NFSv4.2 must land in the FUSE server's backing directory.
        written = f"{marker}-written-over-v4.2"
        (root / "mnt-fuse-nosubtree-v4.2" / "d" / "new.txt").write_text(written)
        res["written_back"] = (src / "d" / "new.txt").read_text()
        res["ok"] = True
    except Exception as e:  # evidence of a failed step is the point of a probe
        res["ok"] = False
        res["error"] = f"{type(e).__name__}: {e}"
        res["traceback"] = traceback.format_exc()
    finally:
        teardown_errors = []
        for m in reversed(mounted[1:]):
            try:
                umount(m)
            except GuestSetupError as e:
                teardown_errors.append(str(e))
        if binds:  # nfsd's threads and export cache hold the binds: both go first
            for argv in (["rpc.nfsd", "0"], ["exportfs", "-ua", "-f"]):
                try:
                    _check(argv)
                except GuestSetupError as e:
                    teardown_errors.append(str(e))
        for m in reversed(binds):
            try:
                umount(m)
            except GuestSetupError as e:
                teardown_errors.append(str(e))
        pids = knfsd.pids() if knfsd else []
        if knfsd is not None:
            try:
                knfsd.stop()
            except GuestSetupError as e:
                teardown_errors.append(str(e))
        if fuse is not None:
            try:
                stop_fuse(fuse, mnt)
            except GuestSetupError as e:
                teardown_errors.append(str(e))
            pids.append(fuse.pid)
        if mounted:
            try:
                umount(mounted[0])
            except GuestSetupError as e:
                teardown_errors.append(str(e))
        res["teardown_errors"] = teardown_errors
        res["left_mounted"] = [m.mountpoint for m in mounts()
                               if m.mountpoint.startswith(str(root))]
        res["left_running"] = [p for p in pids if _running(p)]
        res["uptime_end"] = _uptime()
    return res


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.guest_probe", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    pr = sub.add_parser("probe", help="FUSE -> knfsd -> kernel NFS client smoke, JSON out")
    pr.add_argument("--out", type=Path, required=True, help="JSON result file (a --rwdir)")
    pr.add_argument("--marker", required=True, help="content written to the probe file")
    pr.add_argument("--fsid", type=int, default=101)
    pr.add_argument("--root", type=Path, default=Path("/run/nfsconf/probe"))
    pr.add_argument("--fuse", default="bindfs -f {src} {mnt}", help="foreground FUSE command")
    sub.add_parser("modules", help="load fuse/nfsd/nfs modules and print how each is present")
    args = ap.parse_args(argv)
    if args.cmd == "modules":
        try:
            print(json.dumps(load_modules()))
        except GuestSetupError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        return 0
    res = probe(args.marker, args.fsid, args.fuse.split(), args.root)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(res, indent=1) + "\n")
    tmp.rename(args.out)
    if not res.get("ok"):
        print(res.get("traceback", res.get("error")), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
