"""Input for tests/test_knfsd.py: what a knfsd lab's drop_caches leaves nfsd holding, and
whether the cold decode after it reaches the FUSE server, asked many times in one cell
(before nfsd_refs the answer depended on when an nfsd thread ran); and whether the lab's
drop evicts a file used twice since the last drop on a machine with nothing else to free."""

from pathlib import Path

import pytest

from nfsconf.exporters import nfsd_refs

ROUNDS = 20


def _cold_lookups(cell, since: int) -> list[str]:
    records, _ = cell.trace_since(since)
    return [r["op"] for r in records if r.get("op") == "LOOKUP" and r.get("name") == "."]


@pytest.mark.scenario("NFSD-REFS", "MUST")
def test_drop_leaves_nfsd_nothing(cell):
    if not cell.transport.knfsd:
        pytest.skip("knfsd only")
    obj = cell.seed("file")
    transport = cell.transport
    held_before_drop = []
    for i in range(ROUNDS):
        cell.encode(obj, f"round {i}")
        outcome = cell.decode(obj, f"warm {i}")  # its READ leaves the file in nfsd's cache
        assert outcome == "same", outcome
        held_before_drop.append(nfsd_refs.read_stats().hashed)
        _, since = cell.trace_since()
        cell.drop_caches()
        stats = nfsd_refs.read_stats()
        assert (stats.hashed, stats.queued) == (0, 0), f"round {i}: nfsd still holds {stats}"
        assert transport.exporter.refs.busy_threads() == []
        assert cell.decode(obj, f"cold {i}") == "same"
        assert _cold_lookups(cell, since), f"round {i}: the cold decode never asked the server"
    cell.note("nfsd_files_before_each_drop", held_before_drop)
    assert all(held_before_drop), held_before_drop  # the premise: a READ leaves a file open


@pytest.mark.scenario("DROP-QUIET", "MUST")
def test_drop_evicts_a_file_used_since_the_last_drop(cell):
    """A drop whose first pass frees at most one object passes no more (vmscan.c
    drop_slab), and that pass only clears the referenced flag of a dentry used since the
    last drop: a guest where the last drop left nothing else to free is such a machine."""
    obj = cell.seed("file")
    for i in range(ROUNDS):
        Path("/proc/sys/vm/drop_caches").write_text("2")  # nothing else left to free
        cell.encode_unrecorded(obj)  # the file's dentry made again
        assert cell.decode(obj, f"warm {i}") == "same"  # and used again: referenced
        _, since = cell.trace_since()
        cell.drop_caches()
        assert cell.decode(obj, f"cold {i}") == "same"
        assert _cold_lookups(cell, since), f"round {i}: the cold decode never asked the server"
