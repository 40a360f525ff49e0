"""The fuzz family: the generator is deterministic, and the scenarios run for real."""

import json
import os
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nfsconf.fuzz import KINDS, mutations
from nfsconf.transports.base import Handle

HANDLES = [Handle(0x81, bytes.fromhex("000000000300000000000000")),
           Handle(0x81, bytes.fromhex("000000000500000007000000"))]


@given(seed=st.integers(0, 2**32), budget=st.integers(0, 60))
def test_same_seed_same_mutations(seed, budget):
    first = list(mutations(seed, HANDLES, budget))
    assert first == list(mutations(seed, HANDLES, budget))
    assert len(first) == budget
    if budget >= len(KINDS):
        assert {m.kind for m in first} == set(KINDS)


def test_mutations_differ_from_their_source():
    for m in mutations(3, HANDLES, 140):
        src = HANDLES[m.source]
        if m.kind in ("bitflip", "truncate", "extend", "wrongtype"):
            assert (m.handle.fh_type, m.handle.data) != (src.fh_type, src.data), m
        if m.kind == "truncate":
            assert len(m.handle.data) < len(src.data)
        if m.kind == "nodeid0":
            assert m.handle.data[:8] == bytes(8)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for FUSE mounts")
def test_fuzz_scenarios_on_real_mount(tmp_path):
    r = subprocess.run([sys.executable, "-m", "nfsconf.cli", "run", "-k", "FUZZ",
                        "--profile", "bindfs-noforget", "--fuzz-seed", "7",
                        "--fuzz-budget", "70", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    records = [json.loads(x) for x in (tmp_path / "results.jsonl").read_text().splitlines()]
    fuzz = {x["id"]: x for x in records if x.get("kind") == "result"}
    assert set(fuzz) == {"FUZZ", "FUZZ-GUESS"}
    ev = fuzz["FUZZ"]["evidence"]
    assert ev["seed"] == 7
    # 70 generated + 8 forgotten + 2 from another filesystem, warm and cold
    assert ev["handles_tried"] == 80 and sum(ev["outcomes"].values()) == 160
    assert ev["outcomes"].get("wrong", 0) == 0 and fuzz["FUZZ"]["verdict"] == "PASS"
    assert ev["by_kind"]["forgotten/cold"] == {"error:ESTALE": 8}
