"""nfsd's file cache counters as the suite reads them (pure; the waits themselves are
proven in a guest by test_knfsd.py)."""

from hypothesis import given
from hypothesis import strategies as st

from nfsconf.exporters.nfsd_refs import FileCacheStats, parse_stats

# fs/nfsd/filecache.c of 7.2 (nfsd_file_cache_stats_show), as read in a guest
V7_2 = """total inodes:  1
hash buckets:  64
lru entries:   1
cache hits:    3
acquisitions:  4
allocations:   9
releases:      6
evictions:     2
mean age (ms): 12
"""


def test_reads_7_2s_counters():
    stats = parse_stats(V7_2)
    assert stats == FileCacheStats(hashed=1, allocations=9, releases=6)
    assert stats.queued == 2  # freed neither by a thread nor still in the table


def test_reads_the_older_name_of_the_table_count():
    assert parse_stats(V7_2.replace("total inodes", "total entries")).hashed == 1


def test_a_layout_without_the_counters_is_unknown():
    assert parse_stats("total inodes: 1\nmean age (ms): -\n") is None
    assert parse_stats("") is None


@given(st.integers(0, 2**40), st.integers(0, 2**40), st.integers(0, 2**40))
def test_round_trip(hashed, releases, queued):
    text = V7_2.replace("total inodes:  1", f"total inodes:  {hashed}") \
        .replace("releases:      6", f"releases:      {releases}") \
        .replace("allocations:   9", f"allocations:   {hashed + releases + queued}")
    stats = parse_stats(text)
    assert stats is not None and (stats.hashed, stats.releases, stats.queued) == \
        (hashed, releases, queued)
