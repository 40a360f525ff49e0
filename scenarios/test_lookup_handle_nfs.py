"""FUSE_LOOKUP_HANDLE's promise through NFS clients other than the raw NFSv3 one of
LH-RESTART: the raw NFSv4.1 client (PUTFH of a handle taken before the restart) and the
kernel's own NFS client (a file or directory held open across the restart, so the client can
only present its old handle, never look the name up again).

The kernel client is mounted `noac,lookupcache=none`: after drop_caches every fstat is a
GETATTR and every open below a held directory a LOOKUP in it, on the old handle.
"""

import contextlib
import errno
import os
import stat

import pytest

from nfsconf.scenario import KINDS, RESTARTS, scenario
from nfsconf.transports.base import MARKER_NAME, Decoded, Identity

CLIENTS = ("v4.1", "kclient-v3")
KCLIENT_OPTIONS = ("noac", "lookupcache=none", "soft", "timeo=300", "retrans=2")


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
    kernel sent the server to find it again (from the reference server's trace). A server
    restarts without unmount only with its profile's [restart] commands (the reference
    server: always); others SKIP those two. Under subtree_check, where a file's 0x92 fid
    cannot fit NFSv3's handle, the kernel client's 0x91 handle may give ESTALE, never
    another object (the protocol's limit: Cell.parent_left_out); NFSv4.1's handle holds
    the 0x92 fid and must reach the file."""
    cell.require_restart(how)
    cell.require_lookup_handle()
    obj = cell.seed(kind)
    if client == "kclient-v3":
        cell.require("kernel_client")
    v3 = None
    with contextlib.ExitStack() as stack:
        if client == "v4.1":
            fh = cell.transport.v4_handle(cell.path(obj.rel))
            cell.note("fh", fh.hex())

            def present():  # the transport of the server after the restart
                return cell.transport.decode_v4(fh, obj.identity.is_dir)
        else:
            mount = stack.enter_context(
                cell.transport.kernel_mount("3", cell.root, KCLIENT_OPTIONS))
            cell.note("client", mount.command)
            flags = os.O_RDONLY | (os.O_DIRECTORY if kind == "dir" else 0)
            try:
                fd = os.open(os.path.join(mount.path, obj.rel), flags)
            except OSError as e:  # the export refused a handle the kernel just made
                raise AssertionError(f"before the restart: open {obj.rel} through the "
                                     f"kernel NFS client: {errno.errorcode.get(e.errno)}") from e
            stack.callback(os.close, fd)
            present = _kclient_present(obj, fd)
            v3 = cell.encode_unrecorded(obj)  # the handle knfsd gave the kernel client too
        cell.restart_server(how, [obj])
        label = f"{client} after {how}"
        outcome = cell.decode(obj, label, present)
    assert outcome == "same" or (v3 is not None and cell.stale_by_protocol(obj, outcome, v3)), (
        f"{client}, {kind}, after {how}: {outcome}" + cell.unsent_handles([label]))
