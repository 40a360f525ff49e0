"""FUSE_LOOKUP_HANDLE's promise through NFS clients other than the raw NFSv3 one of
LH-RESTART: the raw NFSv4.1 client (PUTFH of a handle taken before the restart) and the
kernel's own NFS client (a file or directory held open across the restart, so the client can
only present its old handle, never look the name up again).

The kernel client is mounted `noac,lookupcache=none`: after drop_caches every fstat is a
GETATTR and every open below a held directory a LOOKUP in it, on the old handle.
"""

import errno
import os
import stat
import subprocess
import tempfile

import pytest

from nfsconf.nfs import nfs4
from nfsconf.nfs.status import FileType
from nfsconf.scenario import KINDS, RESTARTS, scenario
from nfsconf.transports.base import MARKER_NAME, Decoded, Identity

CLIENTS = ("v4.1", "kclient-v3")
KCLIENT_OPTIONS = "vers=3,nolock,noac,lookupcache=none,soft,timeo=300,retrans=2"


def _v4_present(cell, obj, fh):
    """PUTFH the old handle; GETFH, GETATTR and READ the marker (in a directory: LOOKUP it
    first) in one compound."""
    ops = [nfs4.putfh(fh), nfs4.getfh(), nfs4.getattr(nfs4.Attr.TYPE, nfs4.Attr.FILEID)]
    if obj.identity.is_dir:
        ops.append(nfs4.lookup(MARKER_NAME))
    ops.append(nfs4.read(0, 4096))

    def present():
        res = cell.lab.transport.v4.compound(ops)
        bad = res.failed
        cell.note(f"v4 {obj.rel}", "NFS4_OK" if bad is None else f"{bad.op.name}: "
                  f"{bad.status.name}")
        getfh = res.last(nfs4.Op.GETFH)
        if getfh is not None and getfh.ok and getfh.value != fh:
            raise AssertionError(f"GETFH after PUTFH of {obj.rel} gave {getfh.value.hex()}, "
                                 f"presented {fh.hex()}")
        attrs = res.attrs
        if attrs is None:
            return Decoded(error=bad.status.name if bad else res.status.name)
        read = res.last(nfs4.Op.READ)
        marker = read.value.data.decode(errors="replace") if read and read.ok else None
        ident = Identity(attrs["fileid"], obj.identity.st_dev,
                         attrs["type"] == FileType.DIR, marker)
        return Decoded(identity=ident,
                       path=None if marker is not None else f"marker: {bad.status.name}")

    return present


def _kclient_mount(cell):
    mp = tempfile.mkdtemp(prefix="kclient-", dir=cell.lab.root)
    argv = ["mount", "-t", "nfs", "-o", KCLIENT_OPTIONS,
            f"127.0.0.1:{cell.lab.transport.exporter.mount_path}", mp]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, f"{' '.join(argv)}: {r.stderr.strip()}"
    cell.note("client", " ".join(argv))
    return mp


def _kclient_present(obj, fd):
    """fstat (GETATTR) and read the marker through the held fd (a file: READ; a directory:
    LOOKUP of the marker in it, then READ)."""

    def present():
        try:
            st = os.fstat(fd)
            if obj.identity.is_dir:
                mfd = os.open(MARKER_NAME, os.O_RDONLY, dir_fd=fd)
                try:
                    marker = os.read(mfd, 4096)
                finally:
                    os.close(mfd)
            else:
                marker = os.pread(fd, 4096, 0)
        except OSError as e:
            return Decoded(error=errno.errorcode.get(e.errno, str(e.errno)), errno=e.errno)
        ident = Identity(st.st_ino, obj.identity.st_dev, stat.S_ISDIR(st.st_mode),
                         marker.decode(errors="replace"))
        return Decoded(identity=ident)

    return present


@scenario("LH-RESTART-NFS", "MUST", claim="restart", where="nfs", certify=5,
          lookup_handle=True)
@pytest.mark.parametrize("how", RESTARTS)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("client", CLIENTS)
def test_lookup_handle_restart_nfs_clients(cell, client, kind, how):
    """LH-RESTART-NFS: a handle an NFSv4.1 client (raw PUTFH) or the kernel's NFSv3 client
    (an fd held open) got before the restart reaches the same object after an unmount +
    mount, a handover and a SIGKILL + takeover, cold. The evidence names the requests the
    kernel sent the server to find it again."""
    cell.require_lookup_handle()
    obj = cell.seed(kind)
    if client == "kclient-v3" and not cell.lab.transport.knfsd:
        pytest.skip("the kernel NFS client exists only in the knfsd VM (the host kernel has "
                    "no NFS client)")
    fd = mp = None
    try:
        if client == "v4.1":
            fh = cell.lab.transport.v4_handle(cell.lab.path(obj.rel))
            cell.note("fh", fh.hex())
            present = _v4_present(cell, obj, fh)
        else:
            mp = _kclient_mount(cell)
            flags = os.O_RDONLY | (os.O_DIRECTORY if kind == "dir" else 0)
            try:
                fd = os.open(os.path.join(mp, obj.rel), flags)
            except OSError as e:  # the export refused a handle the kernel just made
                raise AssertionError(f"before the restart: open {obj.rel} through the "
                                     f"kernel NFS client: {errno.errorcode.get(e.errno)}") from e
            present = _kclient_present(obj, fd)
        cell.restart_server(how, [obj])
        label = f"{client} after {how}"
        outcome = cell.decode(obj, label, present)
    finally:
        if fd is not None:
            os.close(fd)
        if mp is not None:
            subprocess.run(["umount", "-l", mp], capture_output=True, timeout=60)
    assert outcome == "same", f"{client}, {kind}, after {how}: {outcome}" + \
        cell.unsent_handles([label])
