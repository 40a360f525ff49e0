"""Which nodeid a server last gave with a handle: how the LOOKUP_HANDLE scenarios find what
a fid that names its object by the handle alone stands for (pure, from a trace's order)."""

from hypothesis import given
from hypothesis import strategies as st

from nfsconf.handles import FuseInodeHandle
from nfsconf.scenario import nodeid_of

handles = st.binary(min_size=1, max_size=8)


@given(st.lists(st.tuples(st.integers(1, 50), handles), max_size=30), handles)
def test_the_last_nodeid_given_with_a_handle_is_found(gifts, handle) -> None:
    given_map: dict[int, bytes] = {}
    for nodeid, h in gifts:  # as Cell.server_handles builds it: a reused nodeid is rebound
        given_map[nodeid] = h
    found = nodeid_of(FuseInodeHandle(0, 0, 0, handle), given_map)
    holders = [n for n, h in given_map.items() if h == handle]
    assert found == (holders[-1] if holders else None)


def test_a_counter_server_s_newest_nodeid_wins() -> None:
    # ref-lh-handles: the object of handle aa got nodeid 2, was forgotten, came back as 7
    alone = FuseInodeHandle(0, 0, 0, b"\xaa")
    assert nodeid_of(alone, {2: b"\xaa", 3: b"\xbb", 7: b"\xaa"}) == 7
    assert nodeid_of(FuseInodeHandle(0, 0, 0, b"\xcc"), {2: b"\xaa"}) is None
    # a part that carries its nodeid (the series as posted) stands for that nodeid
    assert nodeid_of(FuseInodeHandle(9, 1, 0, b"\xaa"), {2: b"\xaa"}) == 9
