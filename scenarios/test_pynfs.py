"""pynfs beside the scenarios: the NFS test suite kernel and NFS-server developers run,
run as itself (`--pynfs DIR`) against the same export, each of its codes a cell."""

from pathlib import Path

import pytest

from nfsconf import pynfs
from nfsconf.scenario import scenario


@scenario("PYNFS", "SHOULD", where="nfs", timeout=pynfs.TIMEOUT + 60, needs=("pynfs",))
@pytest.mark.parametrize("version", pynfs.VERSIONS)
def test_pynfs(cell, options, version):
    """PYNFS: pynfs's NFSv4.0 and v4.1 suites (the file-handle flags unless --pynfs-flags
    says more) against this export; every code it ran is a cell PYNFS-<code>/<version>
    with pynfs's verdict and message. This cell passes when pynfs ran."""
    tree = options.pynfs
    flags = options.pynfs_flags or list(pynfs.HANDLE_FLAGS[version])
    t = cell.transport
    url = f"127.0.0.1:{t.exporter.nfs_port}{t.exporter.v4_path}"
    logs = Path(options.out or cell.root) / "pynfs" / \
        f"{cell.profile.name}-{t.name}"  # pynfs's own output, kept with the run
    codes = pynfs.run(Path(tree), version, url, flags, logs)  # bounded by pynfs.TIMEOUT
    for c in codes:
        cell.extra_cell(f"PYNFS-{c.code}", version, c.verdict,
                        f"pynfs {c.status}" + (f": {c.message}" if c.message else ""),
                        {"pynfs": {"code": c.code, "name": c.name, "status": c.status}})
    cell.note("pynfs", {"url": url, "flags": flags, "codes": len(codes),
                        "statuses": sorted({c.status for c in codes})})
    assert codes, f"pynfs {version} ran no code against {url}"
