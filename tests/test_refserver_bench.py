"""The cold-decode benchmark runs against real mounts (its numbers go to the report)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from nfsconf.fuse import bench
from nfsconf.fuse import sysutil as su


def test_cold_decode_rate_of_the_reference_server(tmp_path: Path) -> None:
    rate = bench.refserver_rate(200, str(tmp_path))
    assert rate > 0
    assert os.listdir(tmp_path / "ref-src") == []  # the bench cleans its files up
    assert not su.is_mountpoint(str(tmp_path / "ref-mnt"))


def test_cold_decode_fails_loudly_where_handles_do_not_decode(tmp_path: Path) -> None:
    with pytest.raises(OSError):  # volatile + forget: every cold decode is ESTALE
        bench.refserver_rate(20, str(tmp_path), nodeid="volatile")
    assert not su.is_mountpoint(str(tmp_path / "ref-mnt"))


@pytest.mark.skipif(shutil.which("mergerfs") is None, reason="mergerfs not installed")
def test_cold_decode_rate_of_mergerfs(tmp_path: Path) -> None:
    assert bench.mergerfs_rate(200, str(tmp_path)) > 0
    assert not su.is_mountpoint(str(tmp_path / "mergerfs-mnt"))


def test_bad_count_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="positive"):
        bench.cold_decode_rate(str(tmp_path), 0)
