"""docs/certification.md is what a vendor follows to certify a server: every nfsconf command
in it parses with this nfsconf's own argument parser, and its example profile loads."""

import re
import shlex
import tomllib
from pathlib import Path

import pytest

from nfsconf.cli import build_parser
from nfsconf.servers.profile import ProfileError, profile_from_dict

DOC = Path(__file__).resolve().parent.parent / "docs" / "certification.md"


def _blocks(text: str, lang: str) -> list[str]:
    """The fenced blocks of LANG (indented ones too: inside a numbered list)."""
    return [m.group(1) for m in re.finditer(rf"^ *```{lang}\n(.*?)^ *```", text, re.M | re.S)]


def _commands(text: str) -> list[list[str]]:
    """Every nfsconf command line: in sh blocks, and in inline code spans."""
    lines = [line for block in _blocks(text, "sh") for line in block.splitlines()]
    lines += re.findall(r"`(nfsconf [^`]+)`", text)
    out = []
    for line in lines:
        words = shlex.split(line, comments=True)
        if words and words[0] == "nfsconf":
            out.append(words)
    return out


def test_every_documented_command_parses():
    commands = _commands(DOC.read_text())
    for words in commands:
        try:
            build_parser().parse_args(words[1:])
        except SystemExit as e:  # argparse's way of refusing
            raise AssertionError(f"docs/certification.md: {shlex.join(words)}: refused "
                                 f"(exit {e.code})") from None
    seen = {tuple(w[1:3]) for w in commands}
    # the LOOKUP_HANDLE walk-through: build, run on the built kernel, certify
    assert {("kernel", "build"), ("run", "--transport"), ("certify", "--results")} <= seen, seen
    build = next(w for w in commands if w[1:3] == ["kernel", "build"] and "--series" in w)
    assert build[build.index("--arch") + 1] == "um"
    runs = [w for w in commands if w[1] == "run"]
    assert runs and all(w[w.index("--transport") + 1] == "knfsd" and "--kernel" in w
                        for w in runs), runs


def test_the_check_refuses_a_wrong_flag():
    """The check above can fail: a flag nfsconf does not have is an argparse exit."""
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--transport", "knfsd", "--kernels", "x"])


def test_documented_profile_loads_and_claims_lookup_handle():
    (text,) = _blocks(DOC.read_text(), "toml")
    profile = profile_from_dict(tomllib.loads(text), "docs/certification.md")
    assert profile.claims.lookup_handle and profile.refserver is None
    # levels 4 and 5 need the restarts without unmount: the example declares both
    assert profile.restart.handover and profile.restart.takeover


def test_documented_typo_message_is_the_real_one():
    doc = " ".join(DOC.read_text().split())
    (text,) = _blocks(DOC.read_text(), "toml")
    data = tomllib.loads(text.replace("lookup_handle =", "lookup_handel ="))
    with pytest.raises(ProfileError) as e:
        profile_from_dict(data, "myfs.toml")
    said = re.search(r"\(`(unknown key [^`]+)`,", doc)
    assert said is not None and said.group(1) in str(e.value), (said, str(e.value))
    data = tomllib.loads(text.replace("handover =", "handovr ="))
    with pytest.raises(ProfileError) as e:
        profile_from_dict(data, "myfs.toml")
    said = re.search(r"`(unknown key 'restart[^`]+)`\)", doc)
    assert said is not None and said.group(1) in str(e.value), (said, str(e.value))
