"""The claims the guests of a split matrix take cells by, on a real directory: each cell to
exactly one taker however they race, a taker that comes back (a guest booted again after a
kernel crash) keeps its own, and what nobody took is known."""

import multiprocessing
import os

from hypothesis import example, given
from hypothesis import strategies as st

from nfsconf import claims
from nfsconf.claims import Claims

NODES = [f"test_x.py::test_{i}[p-knfsd-dir/{i}]" for i in range(300)]


def _take_all(root: str, owner: str, nodes: list[str], start: multiprocessing.Event) -> None:
    start.wait()
    taker = Claims.open(root, owner)
    for node in nodes:
        taker.take(node)


def test_racing_takers_get_each_cell_once(tmp_path):
    start = multiprocessing.Event()
    owners = [f"shard-{i}-of-3" for i in (1, 2, 3)]
    procs = [multiprocessing.Process(target=_take_all, args=(str(tmp_path), o, NODES, start))
             for o in owners]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    holders = claims.holders(tmp_path)
    assert set(holders) == set(NODES)  # every cell taken, by one owner each
    assert set(holders.values()) <= set(owners)
    Claims.open(tmp_path, owners[0]).write_plan(NODES)
    assert claims.unclaimed(tmp_path) == []
    shares = [claims.held(tmp_path, o) for o in owners]
    assert sorted(n for share in shares for n in share) == sorted(NODES)
    for share in shares:  # in the matrix's order
        assert share == [n for n in NODES if n in set(share)]


def test_a_taker_that_comes_back_keeps_its_own_and_leaves_the_others(tmp_path):
    first, second = Claims.open(tmp_path, "shard-1-of-2"), Claims.open(tmp_path, "shard-2-of-2")
    assert first.take(NODES[0]) and first.take(NODES[1])
    assert not second.take(NODES[0])
    assert second.take(NODES[2])
    first.write_plan(NODES[:4])
    again = Claims.open(tmp_path, "shard-1-of-2")  # after a reboot: read from the directory
    assert again.take(NODES[0]) and again.take(NODES[1])
    assert not again.take(NODES[2])
    assert claims.held(tmp_path, "shard-1-of-2") == NODES[:2]
    assert claims.unclaimed(tmp_path) == [NODES[3]]
    # the plan is written once: a later guest's collection does not replace it
    second.write_plan(NODES)
    assert claims.plan(tmp_path) == NODES[:4]
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # no temporary left


def test_no_claims_directory_is_no_claims(tmp_path):
    assert claims.unclaimed(tmp_path / "none") == []
    assert claims.held(tmp_path / "none", "shard-1-of-2") == []


@example(nodes=[".", "..", "planned.json", ".planned.json.shard-1-of-1"])
@given(st.lists(st.text(min_size=1, max_size=20), min_size=1, max_size=8, unique=True))
def test_any_cell_name_is_one_claim_and_reads_back(tmp_path_factory, nodes):
    root = tmp_path_factory.mktemp("claims")
    taker = Claims.open(root, "shard-1-of-1")
    assert all(taker.take(n) for n in nodes)
    assert claims.holders(root) == dict.fromkeys(nodes, "shard-1-of-1")
