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


RESTARTING = GOOD.replace("[claims]", '''[restart]
handover = "bin/myfs --takeover {work}/fd.sock --handover-from {pid} {source} {mountpoint}"
takeover = ["bin/myfs", "--takeover", "{work}/fd.sock", "{mountpoint}"]
[claims]''')


def test_toml_restart_commands_load(tmp_path):
    path = tmp_path / "myfs.toml"
    path.write_text(RESTARTING)
    p = load_profile_file(path)
    myfs = str(tmp_path / "bin" / "myfs")  # beside the profile, as the mount command's
    assert p.restart.handover is not None and p.restart.handover[0] == myfs
    values = dict(source="/s", mountpoint="/m", work="/w", lower="", upper="", pid="42")
    assert p.restart_argv("handover", **values) == [
        myfs, "--takeover", "/w/fd.sock", "--handover-from", "42", "/s", "/m"]
    assert p.restart_argv("takeover", **values) == [myfs, "--takeover", "/w/fd.sock", "/m"]
    path.write_text(GOOD)
    plain = load_profile_file(path)
    assert plain.restart.handover is None and plain.restart_argv("takeover", **values) is None


@pytest.mark.parametrize("text,words", [
    (RESTARTING.replace("handover =", "handovr ="),
     ["unknown key 'restart.handovr'", "did you mean 'restart.handover'?"]),
    (RESTARTING.replace("takeover = [", "take_over = ["),
     ["unknown key 'restart.take_over'", "did you mean 'restart.takeover'?"]),
    (RESTARTING.replace("[restart]", "[restarts]"),
     ["unknown key 'restarts'", "did you mean 'restart'?"]),
    (RESTARTING.replace('takeover = ["bin/myfs", "--takeover", "{work}/fd.sock", "{mountpoint}"]',
                        "takeover = 3"), ["key 'restart.takeover'", "a string or a list"]),
    (RESTARTING.replace("{pid}", "{serverpid}"),
     ["key 'restart.handover'", "unknown placeholder", "pid"]),
    (RESTARTING.replace('takeover = ["bin/myfs", "--takeover", "{work}/fd.sock", "{mountpoint}"]',
                        "takeover = []"), ["key 'restart.takeover'", "a command line"]),
    # {pid} is the serving process: there is none before the mount
    (GOOD.replace("{source}", "--pidof={pid} {source}"), ["key 'mount'", "unknown placeholder"]),
])
def test_bad_restart_keys_are_named(tmp_path, text, words):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ProfileError) as e:
        load_profile_file(path)
    for w in words:
        assert w in str(e.value), str(e.value)
