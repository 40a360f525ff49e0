"""Profiles: built-ins, vendor TOML files, and the errors a typo gets."""

import subprocess
import sys

import pytest

from nfsconf.servers.builtin import BUILTIN, find_profile
from nfsconf.servers.profile import ProfileError, load_profile_file

GOOD = """
name = "myfs"
description = "vendor fs"
mount = "bindfs -f {source} {mountpoint}"
package = "bindfs"
[claims]
export_support = true
cold_decode = false
"""


def test_builtin_names_unique_and_foreground():
    names = [p.name for p in BUILTIN]
    assert len(names) == len(set(names))
    for p in BUILTIN:
        # the suite must own the server's PID: every built-in runs in the foreground
        assert "-f" in p.mount or p.binary == "rclone" or p.refserver is not None, p.name
        assert any("{mountpoint}" in a for a in p.mount), p.name


def test_toml_profile_loads(tmp_path):
    path = tmp_path / "myfs.toml"
    path.write_text(GOOD)
    p = load_profile_file(path)
    assert p.name == "myfs"
    assert p.mount == ("bindfs", "-f", "{source}", "{mountpoint}")
    assert p.claims.export_support and not p.claims.cold_decode
    assert p.argv(source="/s", mountpoint="/m", work="", lower="", upper="") == [
        "bindfs", "-f", "/s", "/m"]
    assert find_profile(str(path)) == p


@pytest.mark.parametrize("text,words", [
    (GOOD.replace("mount =", "mnt ="), ["unknown key 'mnt'"]),
    (GOOD.replace("cold_decode", "cold_decod"), ["claims.cold_decod"]),
    (GOOD.replace("export_support = true", 'export_support = "yes"'),
     ["claims.export_support", "true or false"]),
    (GOOD.replace("{mountpoint}", "{mnt}"), ["key 'mount'", "placeholder"]),
    (GOOD.replace("{mountpoint}", "/tmp/x"), ["{mountpoint}"]),
    (GOOD.replace('name = "myfs"', ""), ["missing key 'name'"]),
    (GOOD.replace("[claims]", 'source = "iso"\n[claims]'), ["key 'source'", "squashfs"]),
    (GOOD.replace('description = "vendor fs"', 'description = "unterminated'), ["not valid TOML"]),
])
def test_bad_toml_names_file_and_key(tmp_path, text, words):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ProfileError) as e:
        load_profile_file(path)
    message = str(e.value)
    assert message.startswith(str(path))
    for w in words:
        assert w in message


def test_unknown_profile_name():
    with pytest.raises(ProfileError, match="no such profile 'nope'.*bindfs"):
        find_profile("nope")


def _run_cli(*args):
    return subprocess.run([sys.executable, "-m", "nfsconf.cli", *args],
                          capture_output=True, text=True, timeout=60)


def test_cli_unknown_profile_one_line_error():
    r = _run_cli("run", "--profile", "no-such-profile")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "no such profile 'no-such-profile'" in lines[0], r.stderr


def test_cli_malformed_toml_one_line_error(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("name = [\n")
    r = _run_cli("run", "--profile", str(path))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0] and "TOML" in lines[0], r.stderr


def test_cli_bad_arguments():
    r = _run_cli("run", "--transport", "carrier-pigeon")
    assert r.returncode == 2 and "invalid choice" in r.stderr
