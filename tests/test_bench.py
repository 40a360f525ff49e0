"""The cold-decode benchmark against real mounts; figures are ratios to an anchor."""

import errno
import json
import os
import subprocess
import sys

import pytest

from nfsconf.bench.decode import cold_decode_rate
from nfsconf.lab import Lab
from nfsconf.servers.builtin import find_profile

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for FUSE mounts")


def test_cold_decode_rate_of_the_reference_server():
    with Lab(find_profile("ref-stable")) as lab:
        assert cold_decode_rate(lab, 200) > 0
        assert [p.name for p in lab.mnt.iterdir() if p.name.startswith("bench-")] == []


def test_cold_decode_fails_loudly_where_handles_do_not_decode():
    with Lab(find_profile("bindfs")) as lab, pytest.raises(OSError) as e:
        cold_decode_rate(lab, 20)  # plain bindfs forgets: every cold decode is ESTALE
    assert e.value.errno == errno.ESTALE, e.value


def test_bad_count_is_rejected():
    with Lab(find_profile("bindfs")) as lab, pytest.raises(ValueError, match="positive"):
        cold_decode_rate(lab, 0)


def test_bench_command_reports_ratio_to_anchor(tmp_path):
    out = tmp_path / "bench.json"
    r = subprocess.run([sys.executable, "-m", "nfsconf.cli", "bench", "decode", "-n", "300",
                        "--rounds", "1", "--out", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    result = json.loads(out.read_text())
    assert set(result["best"]) == {"ref-stable", "mergerfs-noforget"}
    # both measured in this run, once per round, and the ratio is made of those figures
    assert all(len(r) == 1 and r[0] > 0 for r in result["rates"].values()), result["rates"]
    assert result["best"] == {k: max(v) for k, v in result["rates"].items()}
    ref, anchor = result["best"]["ref-stable"], result["best"]["mergerfs-noforget"]
    assert result["ratio_to_anchor"]["ref-stable"] == pytest.approx(ref / anchor)
    assert f"{ref / anchor:.2f}" in r.stdout
    assert "ratio to mergerfs-noforget" in r.stdout
