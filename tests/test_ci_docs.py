"""docs/ci.md's workflows: they parse, and every make target and nfsconf command in them
exists, with flags this nfsconf accepts."""

import re
import shlex
from pathlib import Path

import pytest
import yaml

from nfsconf.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
FILES = [ROOT / "docs/ci/github-workflow.yml", ROOT / "docs/ci/gitlab-ci.yml"]
# a value of the matrix for each CI variable, so a command line can be parsed
VALUES = {"matrix.kernel": "debian:sid", "matrix.shard": "1/2", "strategy.job-index": "0",
          "github.run_id": "1", "KERNEL": "debian:sid", "SHARD": "1/2", "CI_JOB_ID": "1",
          "CI_PIPELINE_ID": "1", "GITHUB_STEP_SUMMARY": "/tmp/summary"}


def _scripts(doc) -> list[str]:
    """Every shell line the file runs (GitHub `run:`, GitLab script sections)."""
    out = []
    if isinstance(doc, dict):
        for key, value in doc.items():
            if key == "run" and isinstance(value, str):
                out.append(value)
            elif key in ("script", "before_script") and isinstance(value, list):
                out += [v for v in value if isinstance(v, str)]
            else:
                out += _scripts(value)
    elif isinstance(doc, list):
        for item in doc:
            out += _scripts(item)
    return out


def _expand(line: str) -> str:
    line = re.sub(r"\$\{\{\s*([\w.-]+)\s*\}\}", lambda m: VALUES[m.group(1)], line)
    return re.sub(r"\$\{?(\w+)\}?", lambda m: VALUES.get(m.group(1), m.group(0)), line)


def _commands(text: str) -> list[list[str]]:
    out = []
    for part in re.split(r"&&|;|\n", text):
        words = shlex.split(_expand(" ".join(part.split())), comments=True)
        if words and words[0] == "sudo":
            words = words[1:]
        if ">>" in words:
            words = words[:words.index(">>")]
        if words:
            out.append(words)
    return out


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_workflow_calls_only_what_exists(path):
    doc = yaml.safe_load(path.read_text())
    commands = [c for s in _scripts(doc) for c in _commands(s)]
    makefile = (ROOT / "Makefile").read_text().replace("$(VENV)", ".venv")
    targets = set(re.findall(r"^([\w./-]+):", makefile, re.M))
    seen_nfsconf = 0
    for words in commands:
        if words[0] == "make":
            missing = [t for t in words[1:] if t not in targets]
            assert not missing, f"{path.name}: make targets not in the Makefile: {missing}"
        if words[0].endswith("nfsconf"):
            seen_nfsconf += 1
            build_parser().parse_args(words[1:])  # SystemExit (exit 2) if a flag is wrong
    assert seen_nfsconf >= 3, f"{path.name}: run, report and diff expected"


def test_parser_refuses_what_a_workflow_could_get_wrong():
    """The check above can fail: a flag that does not exist is an argparse exit."""
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--shards", "1/2"])
