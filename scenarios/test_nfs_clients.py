"""Independent NFS clients: python-libnfs (user space, path-level: it walks from the export
root, so it shows what is reachable by name, never what an old handle reaches) and the
kernel's own NFS client (vers=3 and 4.2 mounts, knfsd VM only: the host kernel has none)."""

import os

import pytest

from nfsconf.scenario import SEED, scenario


@scenario("NFS-BYNAME", "MUST", where="nfs", certify=1)
def test_reachable_by_name_after_drop(cell):
    """NFS-BYNAME: after drop_caches a fresh client (python-libnfs) still reaches the file and
    the directory by name from the export root, with the content and fileid they had."""
    # not a SKIP: a MUST that cannot be shown is not earned (make test installs it)
    import libnfs  # python-libnfs (pip install libnfs; needs libnfs-dev)

    ex = cell.transport.exporter
    port = f"?nfsport={ex.nfs_port}&mountport={ex.mount_port}" if ex.mount_port else ""
    cell.drop_caches()
    nfs = libnfs.NFS(f"nfs://127.0.0.1{ex.mount_path}{port}")
    try:
        rel = SEED["file"]
        stat = nfs.stat(f"/{rel}")
        cell.note("stat", stat)
        if not isinstance(stat, dict):  # libnfs answers a failed call with an error value
            raise AssertionError(f"stat {rel} by name after drop_caches: {stat}")
        f = nfs.open(f"/{rel}", mode="r")
        content = f.read()
        f.close()
        listing = nfs.listdir(f"/{SEED['dir']}")
    finally:
        del nfs
    cell.note("listing", listing)
    assert content == cell.markers[rel], f"read {content!r}"
    assert stat["ino"] == cell.obj(rel).identity.st_ino
    assert ".nfsconf-marker" in listing


@scenario("NFS-KCLIENT", "MUST", where="nfs", certify=1, needs=("kernel_client",))
@pytest.mark.parametrize("vers", ("3", "4.2"))
def test_kernel_client(cell, vers):
    """NFS-KCLIENT: the kernel NFS client mounts the export (vers=3 and 4.2) and, after
    drop_caches, reads the file by name with its content and the FUSE inode number."""
    with cell.transport.kernel_mount(vers, cell.root) as mount:
        cell.drop_caches()
        rel = SEED["file"]
        with open(os.path.join(mount.path, rel)) as f:
            content = f.read()
        ino = os.stat(os.path.join(mount.path, rel)).st_ino
        cell.note("client", {"mount": mount.command, "ino": ino})
    assert content == cell.markers[rel], f"read {content!r}"
    assert ino == cell.obj(rel).identity.st_ino, f"st_ino {ino}"
