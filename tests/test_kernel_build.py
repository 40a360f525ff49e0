"""`nfsconf kernel build`, the parts that need no kernel source: reading a series (format-patch
files, a quilt series file, an mbox), applying it with a clear error, the config checks."""

import subprocess
import sys

import pytest

from nfsconf.errors import BuildError
from nfsconf.series import read_series, series_hash
from nfsconf.vm import kconfig
from nfsconf.vm.build import _apply

PATCH = """From 1111111111111111111111111111111111111111 Mon Sep 17 00:00:00 2001
From: A <a@example.org>
Date: Tue, 1 Dec 2026 10:00:00 +0000
Subject: [PATCH {n}/2] change {name}

---
 {name} | 2 +-
 1 file changed, 1 insertion(+), 1 deletion(-)

diff --git a/{name} b/{name}
--- a/{name}
+++ b/{name}
@@ -1,3 +1,3 @@
 one
-{old}
+{new}
 three
--
2.39.5

"""


def _patch(n, name, old, new):
    return PATCH.format(n=n, name=name, old=old, new=new)


def _tree(tmp_path):
    tree = tmp_path / "tree"
    (tree / "fs").mkdir(parents=True)
    (tree / "fs/a.c").write_text("one\ntwo\nthree\n")
    (tree / "fs/b.c").write_text("one\nzwei\nthree\n")
    return tree


def test_series_directory_in_name_order_and_quilt_order(tmp_path):
    d = tmp_path / "series"
    d.mkdir()
    (d / "0002-b.patch").write_text(_patch(2, "fs/b.c", "zwei", "2"))
    (d / "0001-a.patch").write_text(_patch(1, "fs/a.c", "two", "2"))
    (d / "notes.txt").write_text("not a patch")
    assert [p.name for p in read_series(d)] == ["0001-a.patch", "0002-b.patch"]
    (d / "series").write_text("# quilt order\n0002-b.patch\n0001-a.patch  # last\n")
    assert [p.name for p in read_series(d)] == ["0002-b.patch", "0001-a.patch"]
    (d / "series").write_text("0003-missing.patch\n")
    with pytest.raises(BuildError, match="0003-missing.patch"):
        read_series(d)


def test_mbox_splits_into_its_patches(tmp_path):
    box = tmp_path / "thread.mbox"
    box.write_text(_patch(1, "fs/a.c", "two", "2") + _patch(2, "fs/b.c", "zwei", "2"))
    patches = read_series(box)
    assert len(patches) == 2
    assert "change fs/a.c" in patches[0].name and "change fs/b.c" in patches[1].name
    tree = _tree(tmp_path)
    _apply(tree, patches, "test tree", lambda _: None)
    assert (tree / "fs/a.c").read_text() == "one\n2\nthree\n"
    assert (tree / "fs/b.c").read_text() == "one\n2\nthree\n"


def test_a_patch_that_does_not_apply_names_patch_and_file(tmp_path):
    d = tmp_path / "series"
    d.mkdir()
    (d / "0001-a.patch").write_text(_patch(1, "fs/a.c", "two", "2"))
    (d / "0002-b.patch").write_text(_patch(2, "fs/b.c", "deux", "2"))  # b.c says zwei
    tree = _tree(tmp_path)
    with pytest.raises(BuildError) as e:
        _apply(tree, read_series(d), "linux-source-7.2 7.2.13-1", lambda _: None)
    msg = str(e.value)
    assert "patch 2/2 0002-b.patch does not apply to linux-source-7.2 7.2.13-1" in msg
    assert "fs/b.c" in msg
    assert not tree.exists(), "a half-patched tree must not be reused"


def test_series_hash_follows_content_and_order(tmp_path):
    d = tmp_path / "s"
    d.mkdir()
    (d / "0001-a.patch").write_text(_patch(1, "fs/a.c", "two", "2"))
    (d / "0002-b.patch").write_text(_patch(2, "fs/b.c", "zwei", "2"))
    h = series_hash(read_series(d))
    (d / "0002-b.patch").write_text(_patch(2, "fs/b.c", "zwei", "3"))
    assert series_hash(read_series(d)) != h
    assert series_hash([]) != h


def test_config_checks():
    wanted = kconfig.parse("CONFIG_FUSE_FS=y\nCONFIG_NFSD=m\nCONFIG_CUSE=n\nCONFIG_GONE=y\n")
    final = kconfig.parse("CONFIG_FUSE_FS=y\n# CONFIG_NFSD is not set\n")
    known = {"FUSE_FS", "NFSD", "CUSE"}
    assert kconfig.missing(wanted, final, known) == ["CONFIG_NFSD=m (is n)"]
    assert kconfig.unknown(wanted, known) == ["CONFIG_GONE"]
    assert kconfig.parse(kconfig.GUEST)["CONFIG_FUSE_FS"] == "y"


def test_bad_arguments_are_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "nfsconf.cli", "kernel", "build", "--series",
                        str(tmp_path / "nope")], capture_output=True, text=True)
    assert r.returncode == 2 and "does not exist" in r.stderr and r.stderr.count("\n") == 1
    r = subprocess.run([sys.executable, "-m", "nfsconf.cli", "kernel", "build", "--base",
                        "fedora:40"], capture_output=True, text=True)
    assert r.returncode == 2 and "debian:SUITE" in r.stderr
    r = subprocess.run([sys.executable, "-m", "nfsconf.cli", "kernel", "build", "--arch",
                        "arm64"], capture_output=True, text=True)
    assert r.returncode == 2 and "invalid choice: 'arm64'" in r.stderr


def test_built_tree_names_its_recipe(tmp_path):
    from nfsconf.vm.kernels import _tree_source

    tree = tmp_path / "t"
    tree.mkdir()
    assert _tree_source(tree) == f"tree {tree}"
    (tree / "nfsconf-build.json").write_text(
        '{"source_package": "linux-source-7.2", "source_version": "7.2.13-1", '
        '"series": ["a", "b"], "series_sha256": "6d75bfa76f81"}')
    assert _tree_source(tree).startswith("built linux-source-7.2 7.2.13-1 + 2 patches (6d75bfa7)")
