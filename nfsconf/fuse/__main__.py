"""``python -m nfsconf.fuse SOURCE MOUNTPOINT [options]``: run the reference server (foreground).

SIGTERM/SIGINT: unmount and exit 0. SIGUSR1: hand over (leave the mount and the fd with the
holder, deposit the node table, exit 0) so that ``--takeover`` can continue the connection.

Run by hand, as a vendor's server would be (no RefServer around it), the holder and the
handover are the server's own business:

    python -m nfsconf.fuse SRC MNT --holder SOCK --spawn-holder     # mount, fd kept at SOCK
    python -m nfsconf.fuse SRC MNT --takeover SOCK --handover-from PID   # graceful successor
    python -m nfsconf.fuse SRC MNT --takeover SOCK                  # after PID was SIGKILLed

RefServer starts the holder only when a restart in place needs it (``--late-holder``):
most mounts never restart, and a holder is a whole process start.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import asdict

from . import holder as hd
from . import sysutil as su
from .config import FAULTS, HOSTILE_MODES, Config, Negotiated
from .server import Server
from .trace import log


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m nfsconf.fuse",
                                 description="nfsconf reference FUSE server (raw /dev/fuse).")
    ap.add_argument("source", help="directory to pass through")
    ap.add_argument("mountpoint")
    ap.add_argument("--nodeid", choices=("volatile", "stable"), default="stable",
                    help="volatile: a counter, reused after FORGET; stable: derived from the "
                    "backing file's handle, valid in every server instance")
    ap.add_argument("--generation", choices=("zero", "bump"), default="zero",
                    help="bump: a reused volatile nodeid gets generation + 1")
    ap.add_argument("--export", choices=("on", "off"), default="on",
                    help="on: FUSE_EXPORT_SUPPORT; off: FUSE_NO_EXPORT_SUPPORT if offered")
    ap.add_argument("--forget", choices=("honour", "ignore"), default="honour",
                    help="ignore: FORGET never drops a node (like -o noforget)")
    ap.add_argument("--handle-size", type=int, default=32,
                    help="LOOKUP_HANDLE handle size (used only if the kernel offers it)")
    ap.add_argument("--hostile", choices=HOSTILE_MODES,
                    help="misbehave on the decode path (LOOKUP of '.'/'..', LOOKUP_HANDLE)")
    ap.add_argument("--trace", metavar="FILE", help="append every request and reply as JSONL")
    ap.add_argument("--timeout", type=float, default=1.0, help="entry/attr validity, seconds")
    ap.add_argument("--fsname", default="nfsconf-ref", help="mount source name")
    ap.add_argument("--subtype", default="nfsconf-ref", help="fstype is fuse.SUBTYPE")
    ap.add_argument("--lookup-handle", choices=("auto", "off", "v2", "v3"), default="auto",
                    help="auto: speak LOOKUP_HANDLE (RFC v2) when the kernel really offers it; "
                    "off: decline it; v2/v3: only that dialect")
    ap.add_argument("--handle-size-by-name", action="store_true",
                    help="test hook: an object named hsN gets a handle of N bytes")
    ap.add_argument("--handle-salt", choices=("none", "instance"), default="none",
                    help="instance: handles carry a salt of this server instance, so a "
                    "successor does not recognise them")
    ap.add_argument("--proto-minor", type=int, default=45,
                    help="the newest FUSE protocol minor to speak (23..45), like an older "
                    "libfuse")
    ap.add_argument("--state-dir", help="where stable nodeids of non-ext4 sources are recorded")
    ap.add_argument("--journal", choices=("off", "on"), default="off",
                    help="on: journal volatile nodeids in the state directory while the "
                    "connection lives, so a successor after SIGKILL serves the nodeids the "
                    "kernel holds")
    ap.add_argument("--stall-first", metavar="OPCODE",
                    help="test hook: never answer the first request of this opcode (e.g. READ)")
    ap.add_argument("--fault", choices=FAULTS,
                    help="test hook: a handler raises, as a bug of this server would")
    ap.add_argument("--ready-fd", type=int, help="write 'ready' to this fd once serving")
    ap.add_argument("--holder", metavar="SOCK", help="deposit the /dev/fuse fd with this holder")
    ap.add_argument("--takeover", metavar="SOCK",
                    help="do not mount: take the live connection from this holder")
    ap.add_argument("--wait-release", action="store_true",
                    help="with --takeover: wait until the holder is told to release the fd")
    ap.add_argument("--handover-from", type=int, metavar="PID",
                    help="with --takeover: send PID (the serving instance) SIGUSR1 and take "
                    "the connection once it has left")
    ap.add_argument("--spawn-holder", action="store_true",
                    help="with --holder: start the holder at SOCK first (it stays for the "
                    "successors and quits with the last instance)")
    ap.add_argument("--late-holder", action="store_true",
                    help="with --holder: deposit nothing at start (no holder runs yet); the "
                    "ready line carries the fd's number and what INIT settled, for whoever "
                    "starts the holder later and deposits the fd itself (pidfd_getfd)")
    return ap


@functools.cache
def parser() -> argparse.ArgumentParser:
    """The one parser of this process (parse_args leaves it as it was): the spawner makes it
    before it forks, so a server it forks only parses (building one cost a forked server
    8 ms in a User-Mode Linux guest)."""
    return build_parser()


def spawn_holder(sock: str, timeout: float = 15.0) -> None:
    """Start the fd holder at SOCK, in this process group, and wait until it listens."""
    rfd, wfd = os.pipe()
    try:
        proc = subprocess.Popen([sys.executable, "-m", "nfsconf.fuse.holder", sock,
                                 "--ready-fd", str(wfd)], pass_fds=(wfd,),
                                stdin=subprocess.DEVNULL)
    finally:
        os.close(wfd)
    try:
        ready, _, _ = select.select([rfd], [], [], timeout)
        if not ready or not os.read(rfd, 16).startswith(b"ready"):
            proc.kill()
            raise hd.HolderError(f"the holder at {sock} did not start (status {proc.poll()})")
    finally:
        os.close(rfd)


def ask_to_leave(pid: int, timeout: float = 15.0) -> None:
    """A graceful handover asked by the successor: SIGUSR1 to the serving instance PID, then
    wait until it has exited (it leaves its node table with the holder first)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return  # gone already: nothing serves, the connection is ours to take
    try:
        os.kill(pid, signal.SIGUSR1)
        deadline = time.monotonic() + timeout
        ready: list[int] = []
        while not ready and time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], deadline - time.monotonic())
        if not ready:
            raise hd.HolderError(f"server {pid} did not leave within {timeout:g} s of SIGUSR1")
    finally:
        os.close(fd)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    # realpath() would stat the mount; during a takeover nobody serves it yet (it would hang)
    mnt = os.path.abspath(args.mountpoint) if args.takeover else os.path.realpath(args.mountpoint)
    cfg = Config(source=args.source, mountpoint=mnt,
                 nodeid=args.nodeid, generation=args.generation, export=args.export,
                 forget=args.forget, handle_size=args.handle_size, hostile=args.hostile,
                 trace=args.trace, timeout=args.timeout, fsname=args.fsname,
                 subtype=args.subtype, stall_first=args.stall_first, fault=args.fault,
                 lookup_handle=args.lookup_handle,
                 handle_size_by_name=args.handle_size_by_name, handle_salt=args.handle_salt,
                 proto_minor=args.proto_minor, state_dir=args.state_dir,
                 journal=args.journal)
    try:
        server = Server(cfg, takeover=bool(args.takeover))
        if not args.takeover and su.is_mountpoint(cfg.mountpoint):
            server.close()
            raise ValueError(f"{cfg.mountpoint} is already a mount point; refusing to stack "
                             "a mount on it")
    except (ValueError, OSError) as e:
        log(f"cannot start: {e}")
        return 2
    holder = args.holder or args.takeover
    ready = b"ready"
    server.install_signals()
    try:
        if args.takeover:
            if args.handover_from:
                ask_to_leave(args.handover_from)
            # --wait-release: started early by RefServer, proceed when the old server is gone
            answer, fds = hd.request(args.takeover, {"cmd": "get", "wait": args.wait_release},
                                     timeout=None if args.wait_release else 10)
            if len(fds) != 1:
                raise hd.HolderError(f"holder sent {len(fds)} fds, expected 1")
            neg = Negotiated(**answer["params"]["negotiated"])
            cfg.mountpoint = answer["params"]["config"]["mountpoint"]  # as resolved at mount
            neg.epoch += 1
            server.adopt(fds[0], neg, answer.get("state"))
            hd.request(holder, {"cmd": "update",
                                "params": {"negotiated": asdict(neg), "config": asdict(cfg)}})
        else:
            if args.spawn_holder and args.holder:
                spawn_holder(args.holder)
            server.mount()
            server.init_once()
            params = {"negotiated": asdict(server.neg), "config": asdict(cfg)}
            if args.late_holder:
                ready = b"ready " + json.dumps({"fd": server.fd, "params": params}).encode()
            elif holder:
                hd.request(holder, {"cmd": "put", "params": params}, [server.fd])
    except (OSError, RuntimeError, hd.HolderError, KeyError, TypeError) as e:
        log(f"cannot start: {e}")
        if server.fd >= 0 and not args.takeover:
            server.unmount()
        server.close()
        return 1
    if args.ready_fd is not None:
        os.write(args.ready_fd, ready + b"\n")
        os.close(args.ready_fd)
    reason = server.serve()
    server.tracer.write({"event": "exit", "reason": reason})
    if reason == "handover":
        if holder:
            try:
                hd.request(holder, {"cmd": "update", "state": server.snapshot_state()})
            except hd.HolderError as e:
                log(f"could not leave state with the holder: {e}")
        server.close()
        return 0
    if reason == "stop":
        server.unmount()
    if holder:
        try:
            hd.request(holder, {"cmd": "quit"}, timeout=2)
        except hd.HolderError:
            pass
    server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
