"""The knfsd transport for real: boot Debian's kernel under TCG, export the FUSE mount with
knfsd, and run one NFSv3 and one NFSv4.1 scenario through the raw client."""

import json
import os
import shutil
import subprocess
import sys

import pytest

pytestmark = [
    pytest.mark.vm,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="qemu not installed"),
]


def test_knfsd_smoke(tmp_path):
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "nfsconf.cli", "run", "--transport", "knfsd",
                        "--profile", "bindfs", "--profile", "bindfs-noforget",
                        "-k", "DEC-COLD or NFS-V4-FH", "--out", str(out), "--vm-timeout", "600"],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    env, results = records[0], records[1:]
    assert env["transport"] == "knfsd"
    assert env["kernel"] != os.uname().release  # the guest's kernel, not the host's
    assert env["kernel_image"]["sha256"] and env["kernel_image"]["build_id"]
    cell = {(x["id"], x["variant"], x["profile"], x["transport"]): x for x in results}
    for transport in ("knfsd", "knfsd-subtree"):
        # NFSv3 raw client: bindfs goes STALE after drop_caches in the guest, noforget holds
        plain = cell[("DEC-COLD", "file", "bindfs", transport)]
        assert plain["verdict"] == "FAIL" and plain["errno"] == "NFS3ERR_STALE", plain
        held = cell[("DEC-COLD", "file", "bindfs-noforget", transport)]
        assert held["verdict"] == "PASS", held
        assert held["evidence"]["decodes"]["cold"]["got"]["marker"].startswith("nfsconf ")
        # NFSv4.1 session: PUTFH/GETFH round trip and fileid = st_ino
        assert cell[("NFS-V4-FH", "dir", "bindfs-noforget", transport)]["verdict"] == "PASS"
    assert "knfsd: VM 1 done" in r.stdout
    assert not subprocess.run(["pgrep", "-f", f"rwdir={out}"], capture_output=True).stdout
