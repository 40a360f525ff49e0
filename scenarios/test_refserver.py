"""What only the reference server can show: what the kernel does with a hostile server.
Other profiles SKIP these with the reason. (Restarts without unmount: test_live_restart.py.)"""

import threading

import pytest

from nfsconf.scenario import KINDS, scenario
from nfsconf.transports.base import as_errno_name


def _hostile(cell, mode, kind="file"):
    cell.require_ref()
    cell.restart(hostile=mode)
    objs = cell.seeds(kind)
    for obj in objs:
        cell.encode_unrecorded(obj)
    cell.drop_caches()  # every decode now asks the hostile server LOOKUP(nodeid, ".") ...
    outcomes = [cell.observe(obj, obj.rel) for obj in objs]
    # ... unless something still held the object (knfsd may, for a moment): such a decode
    # is served from the cache, never meets the hostile answer and says nothing of it, so
    # only the decodes that asked the server are judged, and at least one must have
    asked = [o for obj, o in zip(objs, outcomes, strict=True)
             if cell.decoded(obj.rel).get("kernel_asked")]
    cached = [obj.rel for obj in objs if not cell.decoded(obj.rel).get("kernel_asked")]
    cell.note("decoded_from_cache", cached)
    assert asked, f"no decode asked the server after drop_caches (all cached: {cached})"
    from_cache = [o for obj, o in zip(objs, outcomes, strict=True) if obj.rel in cached]
    assert "other" not in from_cache, f"a cached decode opened another object: {outcomes}"
    return asked


@scenario("HOSTILE-DOT", "MUST", needs=("refserver",))
@pytest.mark.parametrize("kind", KINDS)
def test_hostile_wrong_nodeid_for_dot(cell, kind):
    """HOSTILE-DOT: the server answers LOOKUP(nodeid, '.') with another nodeid. The kernel
    must refuse (ESTALE; EIO inside the kernel), never open anything. (Each hostile
    scenario judges the decodes that asked the server; one served from a cache that
    something still held never met the hostile answer.)"""
    outcomes = _hostile(cell, "dot-wrong-nodeid", kind)
    assert all(as_errno_name(x) in ("ESTALE", "EIO") for x in outcomes), outcomes


@scenario("HOSTILE-GEN", "MUST", needs=("refserver",))
def test_hostile_generation_flip(cell):
    """HOSTILE-GEN: the server answers LOOKUP(nodeid, '.') with another generation. The
    kernel must refuse with ESTALE."""
    outcomes = _hostile(cell, "generation-flip")
    # over NFS the refusal is NFS3ERR_STALE / NFS4ERR_STALE: the same ESTALE
    assert all(as_errno_name(x) == "ESTALE" for x in outcomes), outcomes


@scenario("HOSTILE-REUSE", "SHOULD", needs=("refserver",))
def test_hostile_other_file_behind_nodeid(cell):
    """HOSTILE-REUSE: the server puts another file behind a known nodeid and generation.
    Nothing in the protocol lets the kernel notice; the cell records what it did (XFAIL when
    it opened the other file: a known limit, the server is trusted)."""
    outcomes = _hostile(cell, "reuse-other-file")
    cell.note("outcomes", outcomes)
    if "other" in outcomes:
        pytest.xfail(f"{outcomes.count('other')} of {len(outcomes)} handles opened the file "
                     "the server substituted: the kernel trusts nodeid + generation")
    assert all(as_errno_name(x) in ("same", "ESTALE") for x in outcomes), outcomes


@scenario("HOSTILE-NOREPLY", "MUST", needs=("refserver",))
def test_hostile_no_reply(cell):
    """HOSTILE-NOREPLY: the server never answers LOOKUP(nodeid, '.'). The decode blocks until
    the suite aborts the connection; then it must fail (exportfs turns every decode error
    into ESTALE), not hang and not open anything. The abort comes once the server's trace
    shows the request it withholds, with the decode seen still blocked on it."""
    cell.require_ref()
    cell.restart(hostile="no-reply")
    obj = cell.obj("d0/f2")
    cell.encode(obj, "file")
    cell.drop_caches()
    _, start = cell.trace_since()
    got: dict[str, str] = {}
    decoding = threading.Thread(target=lambda: got.update(outcome=cell.decode(obj, "no reply")),
                                daemon=True)
    decoding.start()
    try:
        cell.wait_trace(lambda r: r.get("hostile") == "no-reply", start)
        blocked = decoding.is_alive()
    finally:
        cell.abort()
    decoding.join(30)
    assert not decoding.is_alive(), "the decode still blocks 30 s after the abort"
    outcome = got.get("outcome")
    cell.note("blocked_until_the_abort", blocked)
    assert blocked, f"the decode returned ({outcome}) although the server withheld its reply"
    assert outcome is not None and as_errno_name(outcome) in (
        "ESTALE", "ENOTCONN", "ECONNABORTED", "EIO"), f"decode with the server silent: {outcome}"
