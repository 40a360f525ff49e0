"""Directory listings with attributes (FUSE READDIRPLUS, NFSv3 READDIRPLUS) and the handles
of the objects a listing is the first to bring into the kernel.

Each scenario drops the caches, lists the seed directory d0 and then looks at what the
listing left behind: the names, types and attributes the client got, whether the kernel
kept the entries the server sent with READDIRPLUS (the reference server's trace: an entry
the kernel refuses comes back as a FORGET of its nodeid, and the next stat of the name sends
a LOOKUP of it again), and the handle of every listed object, presented cold. A getdents
that never returns fails after a deadline with the requests the kernel kept sending. The LH-* pair
runs where the server negotiated FUSE_LOOKUP_HANDLE with the kernel; the plain pair runs on
every other connection, so a kernel without the proposal is seen passing the same checks.
"""

import errno
import os
import stat
import threading
from dataclasses import dataclass, field
from typing import Any

from nfsconf.handles import (
    FILEID_FUSE_WITH_PARENT,
    FILEID_FUSE_WITHOUT_PARENT,
    decode_fid,
    decode_nfs_fh,
)
from nfsconf.lab import SEED_FILES, time_scale
from nfsconf.requires import Unsupported
from nfsconf.scenario import nodeid_of, scenario
from nfsconf.transports.base import MARKER_NAME, NFS_FH, Handle, Obj

LISTED = "d0"
# the reference server's entry validity for these scenarios: long enough that a name the
# kernel looks up again after the listing was dropped by the kernel, not timed out
ENTRY_TTL = "300"
# sizeof(struct fuse_entry_out) inside fuse_direntplus on an RFC v2 connection
V2_ENTRY_OUT = 136
SENTINEL = "nfsconf-listing-sentinel"
GETDENTS_DEADLINE = 20.0  # seconds for listing nine names


def _names() -> list[str]:
    return sorted([rel.split("/", 1)[1] for rel in SEED_FILES if rel.startswith(LISTED + "/")]
                  + [MARKER_NAME])


@dataclass
class Window:
    """What the reference server was asked between two points of the scenario."""

    records: list[dict[str, Any]]
    dir_nodeid: int | None = None
    sent: dict[str, int] = field(default_factory=dict)  # name -> nodeid READDIRPLUS gave

    @property
    def readdirplus(self) -> list[dict[str, Any]]:
        return [r for r in self.records if r.get("op") == "READDIRPLUS"]

    @property
    def readdir(self) -> list[dict[str, Any]]:
        return [r for r in self.records if r.get("op") == "READDIR"]

    def forgotten(self) -> dict[int, int]:
        """nodeid -> nlookup of every FORGET and BATCH_FORGET item in the window."""
        out: dict[int, int] = {}
        for r in self.records:
            if r.get("op") == "FORGET":
                out[r["nodeid"]] = out.get(r["nodeid"], 0) + r.get("nlookup", 0)
            elif r.get("op") == "BATCH_FORGET":
                for nodeid, n in r.get("forgets", []):
                    out[nodeid] = out.get(nodeid, 0) + n
        return out

    def looked_up(self, names: list[str]) -> list[str]:
        """LOOKUP / LOOKUP_HANDLE of NAMES in the listed directory, as the trace shows them."""
        return [f"{r['op']}({r['nodeid']:#x}, {r['name']!r}) -> "
                f"{(r.get('reply') or {}).get('nodeid', r.get('result'))}"
                for r in self.records
                if r.get("op") in ("LOOKUP", "LOOKUP_HANDLE") and r.get("name") in names
                and (self.dir_nodeid is None or r.get("nodeid") == self.dir_nodeid)]


def _prepare(cell, on_lh: bool) -> tuple[dict[str, Obj], bool]:
    """Gate on the connection's dialect, give the reference server a long entry TTL, and
    learn what every listed object is (by name, before the drop). Returns the objects and
    whether the reference server's trace is there to read."""
    ref = cell.profile.refserver is not None
    if on_lh:
        cell.require_lookup_handle()
    elif ref and (cell.negotiated() or {}).get("dialect"):
        raise Unsupported("LOOKUP_HANDLE negotiated on this connection: the LH-READDIRPLUS "
                          "scenarios check its listings")
    if ref:
        cell.restart(timeout=ENTRY_TTL)
        flags = _init_flags(cell)
        cell.note("init_flags", flags)
        if "DO_READDIRPLUS" not in flags:
            raise Unsupported("the kernel does not offer FUSE_DO_READDIRPLUS: no listing "
                              "with attributes to check")
    objs = {name: cell.obj(f"{LISTED}/{name}") for name in _names()}
    return objs, ref


def _init_flags(cell) -> list[str]:
    records, _ = cell.trace_since()
    inits = [r for r in records if r.get("op") == "INIT" and "reply" in r]
    return list(inits[-1]["reply"].get("flags", [])) if inits else []


def _window(cell, start: int, what: str) -> Window:
    """The trace from START up to a sentinel LOOKUP of a name that does not exist, waited
    for: the kernel sends the FORGETs of entries it refused before later requests, so the
    window holds every one of them."""
    try:
        os.lstat(cell.path(f"{LISTED}/{SENTINEL}"))
    except FileNotFoundError:
        pass
    cell.wait_trace(lambda r: r.get("name") == SENTINEL, start)
    records, _ = cell.trace_since(start)
    records = [r for r in records if r.get("name") != SENTINEL]
    win = Window(records)
    rdp = win.readdirplus
    if rdp:
        win.dir_nodeid = rdp[0]["nodeid"]
        for r in rdp:
            for name, nodeid, _gen in r.get("entries", []):
                win.sent[name] = nodeid
    cell.note(f"{what}_requests", _summary(records))
    return win


def _summary(records: list[dict[str, Any]]) -> list[str]:
    """One line per request the kernel sent, for the evidence."""
    out = []
    for r in records:
        if "op" not in r:
            continue
        line = f"{r['op']}({r.get('nodeid', 0):#x}"
        if "name" in r:
            line += f", {r['name']!r}"
        line += ")"
        if r["op"] == "READDIRPLUS":
            line += f" offset {r.get('offset')}: {len(r.get('entries', []))} entries"
            if r.get("direntplus"):
                line += f", records {r['direntplus']}"
        elif r["op"] == "BATCH_FORGET":
            line += f" {r.get('forgets')}"
        elif r["op"] == "FORGET":
            line += f" nlookup {r.get('nlookup')}"
        out.append(f"{line} -> {r.get('result')}")
    return out[:80]


def _kept(cell, win: Window, on_lh: bool) -> str | None:
    """None when READDIRPLUS was sent for the listed directory and the kernel kept every
    entry it carried (no FORGET of their nodeids, no LOOKUP of their names afterwards);
    else what it did instead, in one sentence (the details go to the evidence)."""
    if not win.readdirplus:
        sent = "READDIR" if win.readdir else "neither READDIRPLUS nor READDIR"
        return f"DO_READDIRPLUS was negotiated, yet the kernel sent {sent} for {LISTED}"
    if on_lh:
        # every entry's record must carry its handle (fix 0012's layout): a listing that
        # passed with handle-less records would not be the protocol the kernel is judged on
        bad = {r["unique"]: r.get("direntplus") for r in win.readdirplus
               if not _carries_handles(r)}
        if bad:
            return f"the server's READDIRPLUS records were not in the v2 layout: {bad}"
    missing = sorted(set(_names()) - set(win.sent))
    if missing:
        return f"READDIRPLUS carried no entry for {missing}"
    names = _names()
    forgotten = win.forgotten()
    dropped = [n for n in names if win.sent[n] in forgotten]
    again = win.looked_up(names)
    cell.note("refused_entries", {n: f"{win.sent[n]:#x}" for n in dropped})
    cell.note("looked_up_again", again)
    if not dropped and not again:
        return None
    out = (f"READDIRPLUS({LISTED}) gave the kernel {len(names)} entries, it kept "
           f"{len(names) - len(dropped)} (FORGET of {len(dropped)} nodeids at once)"
           + (f", then looked {len(again)} names up again" if again else ""))
    if on_lh:
        out += ("; each v2 record carried the entry's handle after entry_out (fix 0012's "
                "layout)")
    return out


def _carries_handles(record: dict[str, Any]) -> bool:
    """A v2 READDIRPLUS answer whose records are 136-byte entries, each entry with its
    handle bytes (the trace names each sent entry's handle size)."""
    layout = record.get("direntplus") or {}
    sizes = layout.get("handle_sizes", {})
    return layout.get("entry_out") == V2_ENTRY_OUT and all(
        sizes.get(name) for name, _nodeid, _gen in record.get("entries", []))


def _getdents(cell, start: int) -> dict[str, tuple[int, str]]:
    """getdents64 of the listed directory: name -> (d_ino, d_type), no stat. In a thread
    with a deadline: a kernel that never finishes the listing is a FAIL with the requests
    it kept sending, not a cell that runs into the time limit."""
    got: dict[str, Any] = {}

    def run() -> None:
        listed = {}
        try:
            with os.scandir(cell.path(LISTED)) as it:
                for e in it:
                    kind = ("dir" if e.is_dir(follow_symlinks=False) else
                            "file" if e.is_file(follow_symlinks=False) else
                            "symlink" if e.is_symlink() else "other")
                    listed[e.name] = (e.inode(), kind)
        except OSError as err:
            got["error"] = errno.errorcode.get(err.errno or 0, str(err.errno))
        got["listed"] = listed

    t = threading.Thread(target=run, daemon=True)
    t.start()
    deadline = GETDENTS_DEADLINE * time_scale()
    t.join(deadline)
    if t.is_alive():
        records, _ = cell.trace_since(start)
        reads = [r for r in records if r.get("op") in ("READDIRPLUS", "READDIR")]
        cell.note("listing_requests", _summary(records[:40]))
        cell.abort()  # the only way to end a getdents the kernel keeps going
        t.join(10)
        asked = (f": the kernel sent {len(reads)} READDIR(PLUS) requests, at offsets "
                 f"{sorted({r.get('offset') for r in reads})[:5]}" if reads
                 else " (no trace of this server)" if not cell.has_trace else "")
        raise AssertionError(f"getdents of {LISTED} did not return within {deadline:.0f} s"
                             f"{asked}; the connection was aborted")
    if "error" in got:
        raise AssertionError(f"getdents of {LISTED}: {got['error']}")
    return got["listed"]


def _fuse_listing(cell, on_lh: bool) -> None:
    objs, ref = _prepare(cell, on_lh)
    cell.drop_caches()  # the listing is the first the kernel hears of them again
    _, start = cell.trace_since()
    path = cell.path(LISTED)
    listed = _getdents(cell, start)
    stats = {}
    for name in listed:  # the attributes, as `ls -l` asks for them
        try:
            stats[name] = os.lstat(path / name)
        except OSError as err:
            stats[name] = errno.errorcode.get(err.errno or 0, str(err.errno))
    handles = {}
    for name, obj in objs.items():  # name_to_handle_at of entries met only in the listing
        if name in stats and not isinstance(stats[name], str):
            handles[name] = cell.encode(obj, name)
    win = _window(cell, start, "listing") if ref else None
    cell.note("listed", {n: {"d_ino": ino, "d_type": kind} for n, (ino, kind) in listed.items()})

    problems = []
    if sorted(listed) != _names():
        problems.append(f"getdents of {LISTED} listed {sorted(listed)}, the directory holds "
                        f"{_names()}")
    bad = {}
    for name, (ino, kind) in listed.items():
        st, obj = stats[name], objs.get(name)
        if obj is None:
            continue
        size = len(obj.identity.marker or "")
        if isinstance(st, str):
            bad[name] = f"lstat: {st}"
        elif not stat.S_ISREG(st.st_mode) or kind not in ("file", "other"):
            bad[name] = f"d_type {kind}, lstat mode {st.st_mode:o}: a regular file"
        elif ref and st.st_ino != obj.identity.st_ino:
            bad[name] = f"lstat st_ino {st.st_ino}, by name before {obj.identity.st_ino}"
        elif ref and ino != st.st_ino:
            bad[name] = f"getdents d_ino {ino}, lstat st_ino {st.st_ino}"
        elif st.st_size != size:
            bad[name] = f"st_size {st.st_size}, the file holds {size}"
    cell.note("attribute_mismatches", bad)
    if bad:
        first = min(bad)
        problems.append(f"getdents + lstat: {len(bad)} of {len(listed)} entries wrong, e.g. "
                        f"{first}: {bad[first]}")
    if win is not None and (why := _kept(cell, win, on_lh)):
        problems.append(why)
    if on_lh and (why := _check_fids(cell, handles, "name_to_handle_at")):
        problems.append(why)
    cell.drop_caches()
    if why := _judge_decodes(cell, [objs[n] for n in handles], "listed"):
        problems.append(why)
    assert not problems, "; ".join(problems)


def _check_fids(cell, fids: dict[str, Any], how: str) -> str | None:
    """None when every fid (a name_to_handle_at handle, or the fid in a knfsd NFS handle)
    is 0x91 / 0x92 and, where the server's trace tells, carries the handle the server gave
    for its nodeid, byte for byte; else what is wrong, in one sentence."""
    # without the reference server's trace the server's bytes are unknown: the fid type
    # and the cold decodes (_judge_decodes) are the evidence (a vendor's server)
    given = cell.server_handles()
    bad = {}
    for name, h in fids.items():
        try:
            fid = decode_fid(h.fh_type, h.data) if isinstance(h, Handle) else h
        except ValueError as e:  # HandleError included
            bad[name] = f"fid does not parse: {e}"
            continue
        if fid is None or fid.fid_type not in (FILEID_FUSE_WITHOUT_PARENT,
                                               FILEID_FUSE_WITH_PARENT):
            bad[name] = f"fid {fid}: not a LOOKUP_HANDLE fid"
            continue
        if given is None:
            continue
        nodeid = nodeid_of(fid.inode, given)
        want = given.get(nodeid) if nodeid is not None else None
        if fid.inode.handle != want:
            bad[name] = (f"nodeid {fid.inode.nodeid:#x} with {len(fid.inode.handle)} handle "
                         f"bytes {fid.inode.handle.hex()!r}, "
                         + (f"the server gave {len(want)} bytes {want.hex()!r}" if want
                            else "the server never gave that nodeid a handle"))
    cell.note("fid_mismatches", bad)
    if not bad:
        return None
    first = min(bad)
    return f"{how}: {len(bad)} of {len(fids)} fids wrong, e.g. {first}: {bad[first]}"


def _judge_decodes(cell, objs: list[Obj], what: str) -> str | None:
    """Cold decodes of every handle: the same object, or ESTALE from a server that does
    not claim cold decoding or where the protocol leaves nothing else (a file's 0x92 fid
    that cannot fit NFSv3's handle under subtree_check: Cell.parent_left_out); another
    object has failed the cell already (decode_all)."""
    outcomes = cell.decode_all(objs, what)
    cell.note("decodes_cold", dict(zip([o.rel for o in objs], outcomes, strict=True)))
    allowed = ("same",) if cell.profile.claims.cold_decode else ("same", "ESTALE",
                                                                  "NFS3ERR_STALE")
    bad = {o.rel: out for o, out in zip(objs, outcomes, strict=True)
           if out not in allowed and not cell.stale_by_protocol(o, out)}
    return f"cold decode of the {what} handles: {bad}" if bad else None


def _nfs_listing(cell, on_lh: bool) -> None:
    objs, ref = _prepare(cell, on_lh)
    transport = cell.transport
    listed_dir = cell.obj(LISTED)
    dir_fh = transport.encode(cell.path(LISTED)).data
    # The directory stays cached (held open) while its entries are dropped: presenting a
    # cold directory handle is DEC-COLD's subject; here the listing is what must bring
    # the kernel its entries.
    with cell.pinned(listed_dir):
        cell.drop_caches()
        _, start = cell.trace_since()
        res = transport.client.readdirplus_all(dir_fh)
        win = _window(cell, start, "nfs_readdirplus") if ref else None
    entries = {e.name: e for e in res.entries if e.name not in (".", "..")}
    cell.note("nfs_entries", {n: {"fileid": e.fileid, "attr": e.attr is not None,
                                  "fh": e.fh.hex() if e.fh else None}
                              for n, e in entries.items()})
    assert res.ok, f"NFSv3 READDIRPLUS of {LISTED}: {res.status.name}"
    problems = []
    if sorted(entries) != _names():
        problems.append(f"NFSv3 READDIRPLUS of {LISTED} listed {sorted(entries)}, the "
                        f"directory holds {_names()}")
    bad: dict[str, list[str]] = {}
    for name, e in entries.items():
        obj = objs.get(name)
        if obj is None:
            continue
        size = len(obj.identity.marker or "")
        wrong = bad.setdefault(name, [])
        if e.fileid != obj.identity.st_ino:
            wrong.append(f"fileid {e.fileid}, st_ino {obj.identity.st_ino} on the FUSE mount")
        if e.attr is None:
            wrong.append("no attributes")
        elif e.attr.size != size:
            wrong.append(f"size {e.attr.size}, the file holds {size}")
        if not e.fh:
            wrong.append("no file handle")
    bad = {n: v for n, v in bad.items() if v}
    cell.note("entry_mismatches", bad)
    if bad:
        first = min(bad)
        problems.append(f"NFSv3 READDIRPLUS: {len(bad)} of {len(entries)} entries wrong, "
                        f"e.g. {first}: {', '.join(bad[first])}")
    if win is not None and (why := _kept(cell, win, on_lh)):
        problems.append(why)
    with_fh = {n: e.fh for n, e in entries.items() if e.fh and n in objs}
    if on_lh and transport.knfsd and with_fh:
        fids: dict[str, Any] = {}
        for name, fh in with_fh.items():
            try:
                fids[name] = decode_nfs_fh(fh).fid
            except ValueError as err:  # HandleError included
                problems.append(f"knfsd handle of {name} does not decode: {err}")
                break
        else:
            if why := _check_fids(cell, fids, "fids in READDIRPLUS's NFS handles"):
                problems.append(why)
    decodable = [objs[n] for n in sorted(with_fh)]
    for obj in decodable:
        obj.handle = Handle(NFS_FH, with_fh[obj.rel.split("/", 1)[1]])
        cell.encoded(obj.rel, obj.handle)
    if decodable:
        cell.drop_caches()
        if why := _judge_decodes(cell, decodable, "NFS-listed"):
            problems.append(why)
    assert not problems, "; ".join(problems)


@scenario("LISTING", "SHOULD", where="local")
def test_listing(cell):
    """LISTING: after drop_caches, getdents + lstat of a directory (served by READDIRPLUS
    where negotiated) lists every name with its type, inode number and size; the kernel
    keeps the entries READDIRPLUS brought (no FORGET, no LOOKUP of them after); their
    handles decode cold. On connections without LOOKUP_HANDLE."""
    _fuse_listing(cell, on_lh=False)


@scenario("LISTING-NFS", "SHOULD", where="nfs")
def test_listing_nfs(cell):
    """LISTING-NFS: NFSv3 READDIRPLUS through the export, caches dropped: every name with
    its fileid, attributes and a file handle that decodes cold to the same object; the
    kernel keeps what FUSE READDIRPLUS brought it. On connections without LOOKUP_HANDLE."""
    _nfs_listing(cell, on_lh=False)


@scenario("LH-READDIRPLUS", "SHOULD", where="local", lookup_handle=True)
def test_lookup_handle_readdirplus(cell):
    """LH-READDIRPLUS: on a LOOKUP_HANDLE connection, getdents + lstat after drop_caches is
    served by READDIRPLUS (v2 records: the 136-byte fuse_entry_out, then the entry's handle
    bytes padded to 8, then the dirent: the layout fix 0012 gives the protocol, as the
    series' records have no room for a handle) and the kernel keeps its entries; the fid of
    an object first met in the listing is 0x91 with the server's handle and decodes cold."""
    _fuse_listing(cell, on_lh=True)


@scenario("LH-READDIRPLUS-NFS", "SHOULD", where="nfs", lookup_handle=True)
def test_lookup_handle_readdirplus_nfs(cell):
    """LH-READDIRPLUS-NFS: on a LOOKUP_HANDLE connection, NFSv3 READDIRPLUS through knfsd
    gives every entry with attributes and a handle whose fid carries the server's handle;
    the kernel keeps what FUSE READDIRPLUS brought (records with handles, as in
    LH-READDIRPLUS); every handle decodes cold."""
    _nfs_listing(cell, on_lh=True)
