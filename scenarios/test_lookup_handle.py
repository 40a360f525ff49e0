"""FUSE_LOOKUP_HANDLE (RFC v2): the server's own handles in fids 0x91/0x92, on a kernel that
offers it. Any server: a scenario judges from what the kernel shows (the fid type and the
handle bytes in the fid from name_to_handle_at, the objects its handles open after a
restart). One on a server that did not negotiate LOOKUP_HANDLE (fid 0x81) SKIPs with the
reason, or FAILs when the profile claims lookup_handle. The reference server's trace adds
evidence where it exists: the handle bytes it sent, the requests the kernel made. A kernel
bug is a FAIL with the fid bytes, and what came back: the suite never works around the
kernel.
"""

import errno
import os
import struct
import time
from collections import Counter

import pytest

from nfsconf.fuse.config import Config
from nfsconf.handles import (
    FILEID_FUSE_WITH_PARENT,
    FILEID_FUSE_WITHOUT_PARENT,
    MAX_HANDLE_SZ,
    decode_fid,
)
from nfsconf.handles.fusefh import FUSE_MAX_HANDLE_SZ, HANDLE_OFFSET, SIZEOF_FUSE_INODE_HANDLE
from nfsconf.scenario import (
    KINDS,
    RESTARTS,
    SEED,
    KernelRequest,
    nodeid_of,
    scenario,
)
from nfsconf.transports.base import as_errno_name


def fuse_fid(handle):
    """The 0x91/0x92 fid, or a FAIL naming the bytes the kernel wrote."""
    try:
        return decode_fid(handle.fh_type, handle.data)
    except ValueError as e:
        raise AssertionError(f"fid type 0x{handle.fh_type:x} of {len(handle.data)} bytes does "
                             f"not parse as RFC v2 fuse_inode_handle(s): {e}; "
                             f"bytes {handle.data.hex()}") from e


def check_part(part, given, what):
    """One fuse_inode_handle of a fid: a handle of 1..128 bytes, and where the server's
    trace says what it gave (GIVEN), exactly those bytes. The handle names the object
    either alone (nodeid and generation 0: the suite's fix 0013, what the RFC review asked
    for) or beside the nodeid the server gave with it (the series as posted)."""
    assert 0 < len(part.handle) <= FUSE_MAX_HANDLE_SZ, (
        f"{what}: a {len(part.handle)}-byte server handle in the fid")
    if part.by_handle_alone:
        assert given is None or nodeid_of(part, given) is not None, (
            f"{what}: the server never gave the handle {part.handle.hex()}")
        return
    assert part.nodeid > 1, f"{what}: nodeid {part.nodeid} generation {part.generation}"
    if given is None:
        return
    want_handle = given.get(part.nodeid)
    assert want_handle is not None, (
        f"{what}: the server never gave nodeid {part.nodeid:#x} a handle")
    assert part.handle == want_handle, (
        f"{what}: fid carries {len(part.handle)} handle bytes {part.handle.hex()}, the server "
        f"gave nodeid {part.nodeid:#x} {len(want_handle)} bytes {want_handle.hex()}")


@scenario("LH-ENC", "MUST", claim="lookup_handle", where="local", certify=5, lookup_handle=True)
@pytest.mark.parametrize("kind", KINDS)
def test_lookup_handle_encode(cell, kind):
    """LH-ENC: a file or directory of a server that negotiated LOOKUP_HANDLE encodes as
    0x91 FILEID_FUSE_WITHOUT_PARENT: the server's handle, byte for byte, laid out as
    fuse_inode_handle (24 + size bytes), beside either nodeid and generation or 0 and 0
    (the handle alone names the object: STABLE shows why that is the form to want)."""
    neg = cell.require_lookup_handle()
    obj = cell.seed(kind)
    handle = cell.encode(obj, kind)
    assert handle.fh_type == FILEID_FUSE_WITHOUT_PARENT, (
        f"server negotiated LOOKUP_HANDLE ({neg['dialect']}), the kernel encoded "
        f"0x{handle.fh_type:x}")
    fid = fuse_fid(handle)
    check_part(fid.inode, cell.server_handles(), kind)
    assert len(handle.data) == SIZEOF_FUSE_INODE_HANDLE + len(fid.inode.handle), (
        f"{len(handle.data)} fid bytes for a {len(fid.inode.handle)}-byte handle")


@scenario("LH-CONN", "SHOULD", where="local", certify=5, advisory=True, lookup_handle=True)
def test_lookup_handle_connectable(cell):
    """LH-CONN: AT_HANDLE_CONNECTABLE on a file gives 0x92 FILEID_FUSE_WITH_PARENT: the
    file's fuse_inode_handle as in its 0x91 handle, then its parent's as in the parent's,
    each with the handle the server gave."""
    cell.require_lookup_handle()
    obj = cell.seed("file")
    parent_rel = obj.rel.rsplit("/", 1)[0]
    plain = cell.encode(obj, "file")
    parent_plain = cell.encode(cell.obj(parent_rel), "parent")
    conn = cell.require_connectable(obj)
    base = conn.fh_type & 0xFFFF
    assert base == FILEID_FUSE_WITH_PARENT, f"connectable type 0x{conn.fh_type:x}"
    fid, child, parent = fuse_fid(conn), fuse_fid(plain), fuse_fid(parent_plain)
    given = cell.server_handles()
    check_part(fid.inode, given, "child part of 0x92")
    same_as(fid.inode, child.inode, "child part of 0x92", "the file's 0x91 fid")
    assert fid.parent is not None
    assert (fid.parent.nodeid, fid.parent.generation) == (
        parent.inode.nodeid, parent.inode.generation), (
        f"parent part names nodeid {fid.parent.nodeid:#x}/{fid.parent.generation}, the parent "
        f"is {parent.inode.nodeid:#x}/{parent.inode.generation}")
    check_part(fid.parent, given, "parent part of 0x92")
    same_as(fid.parent, parent.inode, "parent part of 0x92", "the parent's 0x91 fid")


def same_as(part, plain, what, whose):
    """A part of a 0x92 fid carries what the object's own 0x91 fid carries."""
    assert (part.nodeid, part.generation, part.handle) == (
        plain.nodeid, plain.generation, plain.handle), (
        f"{what}: nodeid {part.nodeid:#x}/{part.generation} handle {part.handle.hex()}; "
        f"{whose}: nodeid {plain.nodeid:#x}/{plain.generation} handle {plain.handle.hex()}")


@scenario("LH-PARENT", "SHOULD", where="local", certify=5, advisory=True, lookup_handle=True)
def test_lookup_handle_parent_from_fid(cell):
    """LH-PARENT: after drop_caches a connectable 0x92 handle decodes to the file and the
    kernel reconnects it through the parent part of the fid (fh_to_parent)."""
    cell.require_lookup_handle()
    obj = cell.seed("file")
    cell.require_connectable(obj)
    cell.drop_caches()
    outcome = cell.decode(obj, "cold connectable")
    assert outcome == "same", f"0x92 cold decode: {outcome}"
    path = cell.decoded("cold connectable")["path"]
    assert path == str(cell.path(obj.rel)), f"decoded fd is disconnected: path {path!r}"


def _sized_files(cell):
    """One file per handle size 1..max_handle_sz (named hsN), encoded; returns
    {N: (obj or error, handle or error)}. The reference server is restarted to give hsN an
    N-byte handle; any other server gives the handles it gives (it may size them by name
    too: the vendor-lh test profile runs the reference server with that option)."""
    neg = cell.require_lookup_handle()
    if cell.profile.refserver is not None:
        cell.restart(handle_size_by_name=True)
    # the reference server's INIT says what it announced; of others only the limit is known
    top = neg.get("max_handle_sz") or FUSE_MAX_HANDLE_SZ
    cell.path("sizes").mkdir()
    made = {}
    for n in range(1, top + 1):
        try:
            obj = cell.make_file(f"sizes/hs{n}")
        except OSError as e:
            made[n] = (f"create: {errno.errorcode.get(e.errno, e.errno)}", None)
            continue
        try:
            made[n] = (obj, cell.encode_unrecorded(obj))
        except OSError as e:
            made[n] = (obj, f"encode: {errno.errorcode.get(e.errno, e.errno)}")
    cell.note("max_handle_sz", top)
    return made


def fid_handle_size(handle):
    """The handle size a 0x91 fid says its fuse_inode_handle holds (fh.size), or None when
    the fid is too short to say."""
    if len(handle.data) < HANDLE_OFFSET:
        return None
    return struct.unpack_from("=I", handle.data, 12)[0]


@scenario("LH-SIZE", "MUST", where="local", certify=5, lookup_handle=True)
def test_lookup_handle_every_size(cell):
    """LH-SIZE: for every server handle size the kernel accepted (the reference server gives
    every size 1..max_handle_sz; another server the sizes it gives), the fid is 24 + size
    bytes rounded up to whole 4-byte words — name_to_handle_at counts a fid in words, so
    1-3 fill bytes follow a size that is not a multiple of 4, and they must be zero —,
    carries exactly the server's bytes, and after drop_caches opens the same file (or,
    from a server that forgets its nodeids, ESTALE). A truncated or misplaced handle fails
    naming the size. (Until this stop the check wanted exactly 24 + size bytes, which no
    kernel can give for 78 of the sizes: that was the scenario's error, not the kernel's.)
    A fid that names its object by the handle alone (fix 0013) is decoded cold by that
    handle only, so the reference server finds the file by every handle it gave, even one
    too short to hold the backing file's handle (it remembers those while it runs)."""
    made = _sized_files(cell)
    given = cell.server_handles()
    by_name = cell.profile.refserver is not None  # hsN's handle is N bytes
    keeps_nodeids = cell.profile.claims.cold_decode
    bad: dict[int, str] = {}
    kept = {}
    for n, (obj, handle) in made.items():
        if isinstance(obj, str) or isinstance(handle, str):
            continue  # refused by the kernel: LH-SIZE-RANGE's business
        size = n if by_name else fid_handle_size(handle)
        if size is None:
            bad[n] = f"{obj.rel}: a fid of {len(handle.data)} bytes holds no fuse_inode_handle"
            continue
        if size in kept or size in bad:
            continue  # a server of fixed-size handles: one file per size shows it
        kept[size] = obj
        need = SIZEOF_FUSE_INODE_HANDLE + size
        words = (need + 3) & ~3  # whole 4-byte words
        if len(handle.data) != words or any(handle.data[need:]):
            bad[size] = (f"size {size}: the fid has {len(handle.data)} bytes "
                         f"{handle.data[need:].hex() or ''}, fuse_inode_handle + handle needs "
                         f"{need}, {words} in whole words with zero fill"
                         + (f" (*max_len = len >> 2 drops {need % 4})"
                            if len(handle.data) == need & ~3 else ""))
            continue
        try:
            fid = fuse_fid(handle)
            check_part(fid.inode, given, f"size {size}")
        except AssertionError as e:
            bad[size] = str(e)[:240]
    cell.drop_caches()
    for n, obj in kept.items():
        outcome = cell.decode(obj, f"size {n}")  # another object fails at once
        if outcome != "same" and n not in bad and (keeps_nodeids or outcome != "ESTALE"):
            bad[n] = f"size {n}: cold decode {outcome}"
    cell.note("sizes_checked", _ranges(sorted(kept)))
    cell.note("failures", bad)
    assert kept, "the kernel refused every handle size"
    assert not bad, (f"{len(bad)} of {len(kept)} handle sizes broken: sizes "
                     f"{_ranges(sorted(bad))}; e.g. {bad[min(bad)]}")


@scenario("LH-SIZE-RANGE", "SHOULD", where="local", certify=5, advisory=True, lookup_handle=True)
def test_lookup_handle_size_range(cell):
    """LH-SIZE-RANGE: the handle sizes a kernel takes are the sizes it can export. A fid is
    at most MAX_HANDLE_SZ (128) bytes and fuse_inode_handle takes 24 of them, so no kernel
    can export a handle of more than 104 bytes, whatever max_handle_sz the server announced
    (up to 128: the protocol gives it no way to learn the lower limit). The right kernel
    behaviour, which this checks: every size 1..104 the server announced is accepted and
    encodes; a larger one is refused when the object is looked up (create or lookup fails),
    never taken for an object that then cannot be exported (name_to_handle_at EOVERFLOW)."""
    made = _sized_files(cell)
    fits = MAX_HANDLE_SZ - SIZEOF_FUSE_INODE_HANDLE
    refused = {n: (obj if isinstance(obj, str) else handle) for n, (obj, handle) in made.items()
               if n <= fits and (isinstance(obj, str) or isinstance(handle, str))}
    unexportable = {n: handle for n, (obj, handle) in made.items()
                    if n > fits and not isinstance(obj, str) and isinstance(handle, str)}
    cell.note("refused", refused)
    cell.note("taken_but_not_exportable", unexportable)
    assert not refused, (f"sizes {_ranges(sorted(refused))} of 1..{fits}: "
                         + "; ".join(sorted({f"{v}" for v in refused.values()})))
    assert not unexportable, (
        f"sizes {_ranges(sorted(unexportable))}: the kernel took the object, then could not "
        f"export it (" + "; ".join(sorted(set(unexportable.values()))) + "): a handle larger "
        f"than {fits} bytes must be refused when it is looked up")


def _ranges(ns):
    out, start = [], None
    for i, n in enumerate(ns):
        if start is None:
            start = n
        if i + 1 == len(ns) or ns[i + 1] != n + 1:
            out.append(f"{start}" if start == n else f"{start}-{n}")
            start = None
    return ",".join(out)


@scenario("LH-RESTART", "MUST", claim="restart", certify=5, lookup_handle=True)
@pytest.mark.parametrize("how", RESTARTS)
@pytest.mark.parametrize("kind", KINDS)
def test_lookup_handle_restart(cell, kind, how):
    """LH-RESTART: handles the kernel made from the server's LOOKUP_HANDLE handles open the
    same objects, cold, after an unmount + mount and after a restart without unmount
    (handover; SIGKILL + takeover): the proposal's promise. The evidence names the request
    the kernel used to find each object again. A server restarts without unmount only with
    its profile's [restart] commands (the reference server: always); others SKIP those two.
    Under subtree_check, where a file's 0x92 fid cannot fit the handle (NFSv3), its 0x91
    fid may give ESTALE, never another object (the protocol's limit: Cell.parent_left_out)."""
    cell.require_restart(how)
    cell.require_lookup_handle()
    objs = cell.seeds(kind)
    for obj in objs:
        cell.encode(obj)
    cell.restart_server(how, objs)
    outcomes = {obj.rel: cell.decode(obj, obj.rel) for obj in objs}
    cell.note("outcomes", outcomes)
    bad = {obj.rel: outcomes[obj.rel] for obj in objs if outcomes[obj.rel] != "same"
           and not cell.stale_by_protocol(obj, outcomes[obj.rel])}
    assert not bad, f"after {how}: {len(bad)} of {len(objs)}: {bad}" + cell.unsent_handles(
        list(bad))


@scenario("LH-STALE", "MUST", certify=5, lookup_handle=True)
@pytest.mark.parametrize("cache", ("warm", "cold"))
@pytest.mark.parametrize("kind", KINDS)
def test_lookup_handle_unlinked(cell, kind, cache):
    """LH-STALE: the handle of a removed object gives ESTALE (or ENOENT) through
    LOOKUP_HANDLE too, never an fd. Warm (no drop_caches) waits until the kernel has let
    the removed object go (its FORGET in the reference server's trace): until then anything
    may still hold its inode (knfsd's file cache keeps an NFSv3 file open for a while),
    and a decode of a removed yet open object may give it, as OPEN-UNLINKED allows; without
    a trace to wait on, warm checks only that invariant: ESTALE, ENOENT or that object."""
    cell.require_lookup_handle()
    obj = cell.fresh(kind, "victim")
    cell.encode(obj, kind)
    part = fuse_fid(cell.local_fid(obj.rel)).inode
    nodeid = cell.server_nodeid(part)
    _, before = cell.trace_since()
    cell.remove(obj)
    allowed = ("ESTALE", "ENOENT")
    if cache == "cold":
        cell.drop_caches()
    elif cell.has_trace and nodeid is not None:
        cell.wait_trace(lambda r: _forgets(r, nodeid), before)
        cell.note("forgotten", f"{nodeid:#x}")
    else:
        allowed += ("same",)
    outcome = cell.decode(obj, f"after unlink ({cache})")
    assert outcome in allowed or as_errno_name(outcome) in allowed, (
        f"removed {kind}: {outcome}")


def _forgets(record, nodeid: int) -> bool:
    """Whether a trace record is a FORGET (or BATCH_FORGET) of NODEID."""
    if record.get("op") == "FORGET":
        return record.get("nodeid") == nodeid
    return record.get("op") == "BATCH_FORGET" and any(
        n == nodeid for n, _count in record.get("forgets", []))


@scenario("LH-REUSE", "MUST", where="local", lookup_handle=True, needs=("writable",))
def test_lookup_handle_reused_nodeid(cell):
    """LH-REUSE: when a nodeid comes back for another file with another server handle, the
    old fid (which carries the old handle) must not open the new file: the handle is there
    to tell them apart."""
    cell.require_lookup_handle()
    cell.require_writable()
    cell.path("old").mkdir()
    old = [cell.make_file(f"old/f{i}") for i in range(16)]
    fids = {}
    for obj in old:
        fids[obj.rel] = fuse_fid(cell.encode(obj))
    given = cell.server_handles() or {}
    old_nodeids = {rel: nodeid_of(f.inode, given) for rel, f in fids.items()}
    for obj in old:
        os.unlink(cell.path(obj.rel))
    cell.drop_caches()  # the server forgets the nodeids and may hand them out again
    cell.path("new").mkdir()
    new = [cell.make_file(f"new/f{i}") for i in range(64)]
    for obj in new:
        cell.encode(obj)
    given = cell.server_handles() or {}  # the reference server's trace: evidence only
    reused = {rel: nodeid for rel, nodeid in old_nodeids.items()
              if given.get(nodeid) not in (None, fids[rel].inode.handle)}
    cell.note("nodeids_reused_with_another_handle", len(reused))
    outcomes = {}
    for obj in old:
        outcomes[obj.rel] = cell.decode(obj, obj.rel)  # another object fails at once
    cell.note("outcomes", outcomes)
    for rel, outcome in outcomes.items():
        assert outcome != "same", f"the handle of unlinked {rel} still opened it"


HOSTILE_HANDLES = ("zero-handle", "oversize-handle", "short-handle")


@scenario("HOSTILE-HANDLE", "MUST", where="local", lookup_handle=True,
          needs=("refserver",))
@pytest.mark.parametrize("mode", HOSTILE_HANDLES)
def test_hostile_lookup_handle(cell, mode):
    """HOSTILE-HANDLE: LOOKUP_HANDLE replies whose handle is empty (0 bytes), oversize
    (129 bytes) or shorter than its own size field says must be refused (EIO), and never
    become a fid; nothing hangs."""
    cell.require_lookup_handle()
    cell.restart(hostile=mode)
    rel = SEED["file"]
    try:
        os.stat(cell.path(rel))
    except OSError as e:
        cell.note("lookup", errno.errorcode.get(e.errno, e.errno))
        assert e.errno == errno.EIO, f"{mode} reply: lookup failed with {e.strerror}, not EIO"
        return
    handle = cell.encode(cell.obj(rel), "accepted")
    sent = cell.server_handles()
    fid = decode_fid(handle.fh_type, handle.data) \
        if handle.fh_type == FILEID_FUSE_WITHOUT_PARENT else None
    detail = (f"fid handle {len(fid.inode.handle)} bytes {fid.inode.handle.hex()}"
              if fid is not None else f"fid type 0x{handle.fh_type:x}")
    nodeid = nodeid_of(fid.inode, sent or {}) if fid is not None else None
    wire = sent.get(nodeid) if sent and nodeid is not None else None
    raise AssertionError(f"the kernel accepted a {mode} LOOKUP_HANDLE reply (the server sent "
                         f"{len(wire) if wire is not None else '?'} handle bytes): {detail}")


@scenario("COMPAT-LOOKUP", "MUST", where="local", needs=("refserver",))
@pytest.mark.parametrize("minor", (38, 44, 45))
def test_lookup_at_each_minor(cell, minor):
    """COMPAT-LOOKUP: a server that does not speak LOOKUP_HANDLE, at protocol 7.38 (what
    Debian 12's libfuse speaks), 7.44 and 7.45, gets every LOOKUP name NUL-terminated, has
    its fuse_entry_out replies of that minor accepted, and finds the files by name."""
    cell.require_ref()
    cell.restart(proto_minor=minor, lookup_handle="off")
    _, start = cell.trace_since()
    errors = {}
    for rel in ("d0/f3", "d1/sub/g0"):
        try:
            os.stat(cell.path(rel))
        except OSError as e:
            errors[rel] = errno.errorcode.get(e.errno, str(e.errno))
    records, _ = cell.trace_since(start)
    asked = {r["unique"]: r for r in records if "op" in r and "unique" in r}
    unterminated = [f"{r['op']}({r.get('nodeid', 0):#x}) payload {r['name_unterminated']}"
                    for r in records if "name_unterminated" in r]
    refused = [f"{ev['bytes']}-byte reply to {asked.get(ev['unique'], {}).get('op', '?')} "
               f"{asked.get(ev['unique'], {}).get('name', '')!r}: write {ev['errno']}"
               for r in records if (ev := r).get("event") == "reply-error"]
    cell.note("negotiated_minor", (cell.negotiated() or {}).get("minor"))
    cell.note("unterminated", unterminated[:10])
    cell.note("refused_replies", refused[:10])
    cell.note("stat_errors", errors)
    assert not unterminated, (f"at 7.{minor} the kernel sent {len(unterminated)} LOOKUP "
                              f"name(s) without the NUL terminator, e.g. {unterminated[0]}")
    assert not refused, (f"at 7.{minor} the kernel refused {len(refused)} fuse_entry_out "
                         f"reply(ies) of the size 7.{minor} defines, e.g. {refused[0]}")
    assert not errors, f"stat by name at 7.{minor}: {errors}"


@scenario("REVALIDATE", "SHOULD", where="local", needs=("refserver",))
def test_revalidation_keeps_a_matching_entry(cell):
    """REVALIDATE: once the cached entries of d0 and d0/f1 have outlived their validity, a
    stat of d0/f1 revalidates each with one LOOKUP (LOOKUP_HANDLE where negotiated) of its
    name; an answer that matches (the same nodeid, generation, attributes and handle) keeps
    the entry: no second lookup of the name, no FORGET of what is cached below it. Any
    server, any dialect: a kernel that drops a directory's subtree on every revalidation
    also renumbers, on a server with counter nodeids, the objects NFS clients hold handles
    of."""
    cell.require_ref()
    os.stat(cell.path("d0/f1"))  # cached, with d0 and d0's other children from the set-up
    validity = float((cell.profile.refserver or {}).get("timeout", Config.timeout))
    time.sleep(validity + 0.5)  # both entries out of date: the next walk asks the server
    _, start = cell.trace_since()
    os.stat(cell.path("d0/f1"))
    # a lookup's record is written before its reply: the stat returned, so they are all in
    records, offset = cell.trace_since(start)
    lookups = [r for r in records if r.get("op") in ("LOOKUP", "LOOKUP_HANDLE")]
    time.sleep(0.2)  # FORGETs are sent without waiting for the server: evidence only
    forgets = [f for r in records + cell.trace_since(offset)[0] for f in _forgotten(r)]
    cell.note("lookups", [str(KernelRequest.from_record(r)) for r in lookups])
    cell.note("forgotten_nodeids", len(forgets))
    assert {r["name"] for r in lookups} <= {"d0", "f1"}, lookups
    assert lookups, ("no lookup after the entries' validity ran out: the kernel did not "
                     "revalidate, so the scenario shows nothing")
    again = sorted(name for name, n in Counter(r["name"] for r in lookups).items() if n > 1)
    assert not again, (
        f"the kernel looked {', '.join(again)} up twice: it took a matching answer to its "
        f"revalidating {lookups[0]['op']} as a mismatch, dropped the entry and looked it up "
        f"anew, forgetting {len(forgets)} cached nodeid(s) on the way")


def _forgotten(record) -> list[int]:
    if record.get("op") == "FORGET":
        return [record["nodeid"]]
    if record.get("op") == "BATCH_FORGET":
        return [nodeid for nodeid, _ in record.get("forgets", [])]
    return []
