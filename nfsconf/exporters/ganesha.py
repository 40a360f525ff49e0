"""Run NFS-Ganesha (FSAL_VFS) on 127.0.0.1 exporting one directory, e.g. a FUSE mount.

    with Ganesha("/mnt/fuse") as g:
        fh = Mount3Client(port=g.mnt_port).mnt(g.mount_path).fh
        Nfs4Client(port=g.port).lookup_path(g.pseudo + "/file")

Everything Ganesha writes (config, log, pid file, v4 recovery dir, krb5 cache dir) lives in
one private temporary directory removed on exit. Ganesha refuses to start without a
portmapper, so ``rpcbind -f -w`` is started when nothing listens on port 111, and stopped
again on exit; a portmapper already running is reused and left alone. Measured facts this
relies on (Ganesha 4.3, rpcbind 1.2.6, Debian 12):

- ``rpcbind -h 127.0.0.1`` crashes, so rpcbind listens on all addresses of this host;
- each instance gets its own NFS and MOUNT ports, so several can run at once (the last to
  start owns the portmapper registration, which only the kernel client would consult);
- ``Graceless = true`` skips the 90 s grace period; ``Attr_Expiration_Time = 0`` stops the
  metadata cache from hiding changes made behind Ganesha's back (e.g. deletes);
- NFS NULL answers about 0.02-0.1 s after exec; SIGTERM ends it in about 0.05 s;
- D-Bus is absent here: Ganesha logs CRIT lines about it and works on.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from nfsconf.nfs.rpc import PROG_MOUNT, PROG_NFS, AuthNone, RpcClient, RpcError

GANESHA_BIN = "ganesha.nfsd"
RPCBIND_BIN = "rpcbind"


class GaneshaError(RuntimeError):
    """Ganesha or rpcbind could not be started; the message carries the log's tail."""


def _free_port() -> int:
    """A free port below the kernel's ephemeral range: a port from that range can go to any
    process's outgoing connection between this check and Ganesha's bind (a make test saw
    MOUNT's port refused while NFS answered)."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    for port in random.sample(range(10000, max(low, 10100)), 100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise GaneshaError(f"no free port between 10000 and {low}")


def _listening(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def _end(proc: subprocess.Popen[bytes], grace: float = 5.0) -> int:
    """SIGTERM, then SIGKILL after ``grace`` seconds; returns the exit status."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


@dataclass
class GaneshaConfig:
    export_path: str
    state_dir: str
    port: int
    mnt_port: int
    pseudo: str = "/nfsconf"
    export_id: int = 77
    log_level: str = "EVENT"

    def render(self) -> str:
        s = self.state_dir
        return f"""\
NFS_CORE_PARAM {{
    Bind_addr = 127.0.0.1;
    NFS_Port = {self.port};
    MNT_Port = {self.mnt_port};
    Protocols = 3, 4;
    Enable_NLM = false;
    Enable_RQUOTA = false;
    Enable_UDP = false;
}}
NFSV4 {{
    Graceless = true;
    RecoveryRoot = "{s}/recovery";
}}
NFS_KRB5 {{
    Active_krb5 = false;
    CCacheDir = "{s}/krb5";
}}
LOG {{
    Default_Log_Level = {self.log_level};
}}
EXPORT {{
    Export_Id = {self.export_id};
    Path = "{self.export_path}";
    Pseudo = "{self.pseudo}";
    Protocols = 3, 4;
    Transports = TCP;
    Access_Type = RW;
    Squash = None;
    SecType = sys, none;
    Attr_Expiration_Time = 0;
    FSAL {{
        Name = VFS;
    }}
}}
"""


class Ganesha:
    """Context manager around one ganesha.nfsd (and, if needed, one rpcbind)."""

    def __init__(self, export_path: str | os.PathLike[str], port: int = 0, mnt_port: int = 0,
                 pseudo: str = "/nfsconf", export_id: int = 77, log_level: str = "EVENT",
                 start_timeout: float = 15.0) -> None:
        path = Path(export_path)
        if not path.is_absolute() or not path.is_dir():
            raise GaneshaError(f"export path must be an existing absolute directory: {path}")
        if '"' in str(path) or '"' in pseudo:
            raise GaneshaError("export and pseudo paths must not contain '\"'")
        if not pseudo.startswith("/") or pseudo == "/":
            raise GaneshaError(f"pseudo path must be absolute and not '/': {pseudo!r}")
        self.export_path = str(path)
        self._want = (port, mnt_port, pseudo, export_id, log_level)
        self.start_timeout = start_timeout
        self.host = "127.0.0.1"
        self.config: GaneshaConfig | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.rpcbind: subprocess.Popen[bytes] | None = None
        self.state_dir: str | None = None
        self.last_log = ""
        self.exit_codes: list[int] = []

    # Public facts of the running instance.

    @property
    def port(self) -> int:
        return self._cfg().port

    @property
    def mnt_port(self) -> int:
        return self._cfg().mnt_port

    @property
    def mount_path(self) -> str:
        """The path MOUNT3 MNT takes: Ganesha exports by its real path."""
        return self.export_path

    @property
    def pseudo(self) -> str:
        """The NFSv4 path of the export below the pseudo root."""
        return self._cfg().pseudo

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def log_path(self) -> Path:
        return Path(self._cfg().state_dir) / "ganesha.log"

    def _cfg(self) -> GaneshaConfig:
        if self.config is None:
            raise GaneshaError("Ganesha is not started")
        return self.config

    # Lifecycle.

    def __enter__(self) -> Ganesha:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        if os.geteuid() != 0:
            raise GaneshaError("Ganesha's FSAL_VFS needs root (open_by_handle_at)")
        for binary in (GANESHA_BIN, RPCBIND_BIN):
            if shutil.which(binary) is None:
                raise GaneshaError(f"{binary} not found: apt-get install nfs-ganesha "
                                   "nfs-ganesha-vfs rpcbind")
        port, mnt_port, pseudo, export_id, log_level = self._want
        self.state_dir = tempfile.mkdtemp(prefix="nfsconf-ganesha-")
        try:
            for sub in ("recovery", "krb5"):
                os.mkdir(os.path.join(self.state_dir, sub))
            self.config = GaneshaConfig(self.export_path, self.state_dir, port or _free_port(),
                                        mnt_port or _free_port(), pseudo, export_id, log_level)
            Path(self.state_dir, "ganesha.conf").write_text(self.config.render())
            self._ensure_rpcbind()
            self._start_ganesha()
        except BaseException:
            self.close()
            raise

    def _ensure_rpcbind(self) -> None:
        if _listening(111):
            return
        # -w: warm start from /run/rpcbind state files if any; never -h (crashes 1.2.6).
        err_path = Path(self._cfg().state_dir, "rpcbind.err")
        with open(err_path, "ab") as err:
            proc = subprocess.Popen([RPCBIND_BIN, "-f", "-w"], stdin=subprocess.DEVNULL,
                                    stdout=err, stderr=err)
        deadline = time.monotonic() + 5
        while not _listening(111):
            if proc.poll() is not None or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        if proc.poll() is None:
            self.rpcbind = proc
            return
        if not _listening(111):  # else another process won the race for port 111
            err = err_path.read_text(errors="replace").strip()
            raise GaneshaError(f"rpcbind exited with {proc.returncode}: {err}")

    def _start_ganesha(self) -> None:
        cfg = self._cfg()
        sd = cfg.state_dir
        out = open(os.path.join(sd, "ganesha.out"), "ab")
        try:
            self.proc = subprocess.Popen(
                [GANESHA_BIN, "-F", "-L", str(self.log_path), "-f", f"{sd}/ganesha.conf",
                 "-p", f"{sd}/ganesha.pid"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        finally:
            out.close()
        deadline = time.monotonic() + self.start_timeout
        # both listeners: ganesha.nfsd answers NFS a moment before its MOUNT port listens
        # (a MNT right after the NFS NULL was refused)
        for name, prog, port in (("NFS", PROG_NFS, cfg.port), ("MOUNT", PROG_MOUNT, cfg.mnt_port)):
            probe = RpcClient(self.host, port, prog, 3, AuthNone(), timeout=1.0,
                              privileged=False)
            try:
                while True:
                    if self.proc.poll() is not None:
                        raise GaneshaError(f"ganesha.nfsd exited with {self.proc.returncode}:\n"
                                           + self._log_tail())
                    try:
                        probe.null()
                        break
                    except RpcError as e:
                        if time.monotonic() > deadline:
                            raise GaneshaError(
                                f"ganesha.nfsd did not answer {name} NULL within "
                                f"{self.start_timeout:g}s:\n" + self._log_tail()) from e
                        time.sleep(0.01)
            finally:
                probe.close()

    def _log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
            text += Path(self._cfg().state_dir, "ganesha.out").read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> int | None:
        """End ganesha.nfsd (SIGTERM, then SIGKILL); returns its exit status."""
        if self.proc is None:
            return None
        code = _end(self.proc)
        self.exit_codes.append(code)
        self.proc = None
        if self.config is not None and self.log_path.exists():
            self.last_log = self.log_path.read_text(errors="replace")
        return code

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Crash the server on purpose; ``start_again()`` or ``close()`` may follow."""
        if self.proc is not None:
            self.proc.send_signal(sig)
            self.proc.wait()
            self.exit_codes.append(self.proc.returncode)
            self.proc = None

    def start_again(self) -> None:
        """Start ganesha.nfsd once more with the same config and ports."""
        if self.proc is not None:
            raise GaneshaError("ganesha.nfsd is still running")
        self._ensure_rpcbind()  # a shared portmapper may have gone away meanwhile
        self._start_ganesha()

    def restart(self) -> None:
        self.stop()
        self.start_again()

    def close(self) -> None:
        """End what this instance started, by PID, and remove its state directory."""
        try:
            self.stop()
        finally:
            if self.rpcbind is not None:
                _end(self.rpcbind)
                self.rpcbind = None
            if self.state_dir is not None:
                shutil.rmtree(self.state_dir, ignore_errors=True)
                self.state_dir = None
            self.config = None


class GaneshaExporter:
    """The Ganesha exporter of one lab (the ganesha transport)."""

    knfsd = subtree_check = False

    def __init__(self, path: Path) -> None:
        self._g = Ganesha(path)

    def start(self) -> None:
        self._g.start()

    def stop(self) -> None:
        self._g.close()

    def settle(self, *, purge: bool = False) -> str | None:
        # Ganesha's open fds live in a host process the suite cannot ask to let go; its
        # cold decodes are cold for the FUSE mount only as far as Ganesha closed them
        return None

    @property
    def nfs_port(self) -> int:
        return self._g.port

    @property
    def mount_port(self) -> int:
        return self._g.mnt_port

    @property
    def mount_path(self) -> str:
        return self._g.mount_path

    @property
    def v4_path(self) -> str:
        return self._g.pseudo
