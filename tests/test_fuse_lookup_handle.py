"""LOOKUP_HANDLE dialects on bytes only: no kernel here offers FUSE_HAS_LOOKUP_HANDLE.

The codec tests check the layouts of the RFC v2 and v3 patches; the engine tests feed the
reference server's request engine (Server.process) the bytes such a kernel would send.
"""

from __future__ import annotations

import errno
import os
import struct
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nfsconf.fuse import abi
from nfsconf.fuse import lookup_handle as lh
from nfsconf.fuse.initflags import lookup_handle_offer
from nfsconf.fuse.server import Config, Server

handles = st.binary(min_size=0, max_size=lh.FUSE_MAX_HANDLE_SZ)
names = st.binary(min_size=1, max_size=64).filter(lambda b: b"\0" not in b)
u32 = st.integers(0, 2**32 - 1)
u64 = st.integers(0, 2**64 - 1)

# ------------------------------------------------------------------ RFC v2 codecs ------


@given(data=handles, typ=u32)
def test_v2_file_handle_round_trip(data: bytes, typ: int) -> None:
    fh = lh.FileHandle(data, typ)
    raw = lh.V2.encode_file_handle(fh)
    assert raw[:8] == struct.pack("<II", len(data), typ)  # u32 size, u32 type, bytes
    assert lh.V2.decode_file_handle(raw) == (fh, 8 + len(data))


@given(name=names, parent=st.none() | st.builds(lh.FileHandle, handles, u32))
def test_v2_lookup_request_round_trip(name: bytes, parent: lh.FileHandle | None) -> None:
    raw = lh.V2.encode_lookup_request(name, parent)
    assert raw.startswith(name + b"\0")
    assert lh.V2.decode_lookup_request(raw) == (name, parent)


@given(nodeid=u64, gen=u64, data=handles, typ=u32)
def test_v2_entry_reply_round_trip(nodeid: int, gen: int, data: bytes, typ: int) -> None:
    entry = abi.EntryOut(nodeid, gen, 1, 1, 0, 0, abi.Attr(ino=5, mode=0o100644, nlink=1))
    raw = lh.V2.encode_entry(entry, lh.FileHandle(data, typ))
    assert len(raw) == 128 + 8 + len(data)  # FUSE_COMPAT_45_ENTRY_OUT_SIZE + handle
    assert raw[:128] == entry.pack()
    assert lh.V2.decode_entry(raw) == (entry, lh.FileHandle(data, typ))


dirent_names = st.binary(min_size=1, max_size=255).filter(
    lambda b: b"\0" not in b and b"/" not in b)


@given(nodeid=u64, gen=u64, name=dirent_names, off=u64,
       handle=st.binary(min_size=0, max_size=104))
def test_v2_direntplus_round_trip(nodeid: int, gen: int, name: bytes, off: int,
                                  handle: bytes) -> None:
    """A v2 record in fix 0012's layout: 128-byte entry, the handle header, the handle
    bytes padded to 8, then the dirent, the whole record padded to 8
    (FUSE_DIRENTPLUS_HANDLE_SIZE)."""
    entry = abi.EntryOut(nodeid, gen, 1, 1, 0, 0, abi.Attr(ino=9, mode=0o100644, nlink=1))
    dirent = abi.Dirent(9, off, 8, name)
    fh = lh.FileHandle(handle, 3)
    raw = lh.V2.encode_direntplus(entry.pack(), dirent.pack(), fh)
    assert lh.V2.DIRENTPLUS_ENTRY_OUT_SIZE == 136
    assert raw[128:136] == struct.pack("<II", len(handle), 3)
    assert raw[136:136 + len(handle)] == handle
    assert len(raw) == abi.rec_align(136 + abi.rec_align(len(handle)) + abi.DIRENT_HEAD.size
                                     + len(name))
    assert lh.V2.decode_direntplus(raw + b"\xee" * 16) == (entry, fh, dirent, len(raw))


@given(name=dirent_names)
def test_v2_direntplus_without_an_entry(name: bytes) -> None:
    """A record without an entry (nodeid 0: the dot names) has handle size 0 and its dirent
    at offset 136; malformed records are errors."""
    entry = bytes(abi.EntryOut.FMT.size)
    dirent = abi.Dirent(7, 1, 4, name).pack()
    raw = lh.V2.encode_direntplus(entry, dirent)
    assert raw == entry + struct.pack("<II", 0, 0) + dirent
    _e, fh, got, used = lh.V2.decode_direntplus(raw)
    assert fh == lh.FileHandle(b"") and got.name == name and used == len(raw)
    with pytest.raises(lh.HandleError):
        lh.V2.encode_direntplus(entry + b"\0", dirent)  # not a fuse_entry_out
    with pytest.raises(lh.HandleError, match="truncated"):
        lh.V2.decode_direntplus(raw[:150])
    with pytest.raises(lh.HandleError, match="truncated"):  # a size that runs past
        lh.V2.decode_direntplus(entry + struct.pack("<II", 64, 0) + dirent[:8])


def test_v2_truncated_and_trailing_bytes_are_errors() -> None:
    raw = lh.V2.encode_file_handle(lh.FileHandle(b"abcdef", 1))
    with pytest.raises(lh.HandleError, match="runs past"):
        lh.V2.decode_file_handle(raw[:-1])
    with pytest.raises(lh.HandleError, match="truncated"):
        lh.V2.decode_file_handle(raw[:7])
    with pytest.raises(lh.HandleError, match="trailing"):
        lh.V2.decode_lookup_request(b"x\0" + raw + b"!")
    with pytest.raises(lh.HandleError, match="NUL"):
        lh.V2.decode_lookup_request(b"x")


def test_v2_size_limits_as_the_kernel_checks_them() -> None:
    assert not lh.V2.kernel_accepts(0, 128)  # empty handle: EIO
    assert lh.V2.kernel_accepts(1, 128)
    assert lh.V2.kernel_accepts(127, 128)
    assert not lh.V2.kernel_accepts(128, 128)  # ">= FUSE_MAX_HANDLE_SZ" is rejected
    assert not lh.V2.kernel_accepts(32, 32)  # fuse_iget: ">= max_handle_sz"
    assert lh.V2.init_reply_valid(128) and not lh.V2.init_reply_valid(129)
    assert not lh.V2.init_reply_valid(0)


def test_v2_max_handle_sz_lives_after_request_timeout() -> None:
    base = abi.InitOut(7, 45, 0, 0, request_timeout=0x1234).pack()
    raw = lh.V2.set_init_max_handle_sz(base, 100)
    assert len(raw) == 64
    assert lh.V2.get_init_max_handle_sz(raw) == 100
    assert abi.InitOut.unpack(raw).max_handle_sz == 100
    assert abi.InitOut.unpack(raw).request_timeout == 0x1234  # neighbour untouched
    with pytest.raises(lh.HandleError):
        lh.V2.set_init_max_handle_sz(base, 1 << 16)


@given(nodeid=u64, gen=u32, data=st.binary(min_size=1, max_size=64), typ=u32,
       pdata=st.binary(min_size=1, max_size=64))
def test_v2_export_fid_round_trip(nodeid: int, gen: int, data: bytes, typ: int,
                                  pdata: bytes) -> None:
    fid_type, body, words = lh.V2.encode_fid(nodeid, gen, lh.FileHandle(data, typ))
    assert fid_type == 0x91 and len(body) == 24 + len(data)
    assert body[20:20 + len(data)] == data  # handle bytes right after the 20-byte head
    assert lh.V2.decode_fid(fid_type, body) == [(nodeid, gen, lh.FileHandle(data, typ))]
    assert words == len(body) >> 2
    fid_type, body, _ = lh.V2.encode_fid(nodeid, gen, lh.FileHandle(data, typ),
                                         (7, 3, lh.FileHandle(pdata, 2)))
    assert fid_type == 0x92
    assert lh.V2.decode_fid(fid_type, body)[1] == (7, 3, lh.FileHandle(pdata, 2))


def test_v2_fid_word_count_truncates_odd_sizes() -> None:
    # The patch reports (len + lenp) >> 2 words: a 5-byte handle (29 bytes) claims 28.
    _t, body, words = lh.V2.encode_fid(9, 1, lh.FileHandle(b"12345"))
    assert len(body) == 29 and words * 4 == 28
    with pytest.raises(lh.HandleError, match="runs past"):
        lh.V2.decode_fid(0x91, body[:words * 4 - 8])
    with pytest.raises(lh.HandleError, match="not a v2"):
        lh.V2.decode_fid(0x81, body)

# ------------------------------------------------------------------ RFC v3 codecs ------


@given(data=handles)
def test_v3_file_handle_round_trip(data: bytes) -> None:
    raw = lh.V3.encode_file_handle(lh.FileHandle(data))
    assert raw[:2] == struct.pack("<H", len(data))  # u16 size, then bytes
    assert lh.V3.decode_file_handle(raw) == (lh.FileHandle(data), 2 + len(data))


@given(data=handles)
def test_v3_ext_handle_is_an_aligned_extension(data: bytes) -> None:
    ext = lh.V3.encode_ext_handle(lh.FileHandle(data))
    size, typ = struct.unpack_from("<II", ext)
    assert typ == 33 and size == len(ext) and size % 8 == 0
    assert size == (8 + 2 + len(data) + 7) // 8 * 8
    args, exts = lh.V3.split_extensions(b"name\0" + ext, len(ext) // 8)
    assert args == b"name\0"
    assert lh.V3.parent_handle(exts) == lh.FileHandle(data)


@given(name=names, parent=st.none() | st.builds(lh.FileHandle, handles))
def test_v3_lookup_request_round_trip(name: bytes, parent: lh.FileHandle | None) -> None:
    payload, extlen = lh.V3.encode_lookup_request(name, parent)
    assert (extlen == 0) == (parent is None)
    assert lh.V3.decode_lookup_request(payload, extlen) == (name, parent)


@given(name=names, flags=u32, mode=u32, parent=st.none() | st.builds(lh.FileHandle, handles))
def test_v3_mkobj_request_round_trip(name: bytes, flags: int, mode: int,
                                     parent: lh.FileHandle | None) -> None:
    ci = abi.CreateIn(flags, mode, 0o22, 0)
    payload, extlen = lh.V3.encode_mkobj_request(ci, name, parent)
    assert payload[:16] == ci.pack()
    assert lh.V3.decode_mkobj_request(payload, extlen) == (ci, name, parent)


@given(nodeid=u64, gen=u64, ev=u64, evn=u32, data=handles)
def test_v3_entry2_reply_round_trip(nodeid: int, gen: int, ev: int, evn: int,
                                    data: bytes) -> None:
    raw = lh.V3.encode_entry_reply(nodeid, gen, lh.FileHandle(data), ev, evn)
    assert len(raw) == 40 + 2 + len(data)  # fuse_entry2_out is 40 bytes
    assert raw[32:40] == b"\0" * 8  # spare
    entry, fh = lh.V3.decode_entry_reply(raw)
    assert entry == {"nodeid": nodeid, "generation": gen, "entry_valid": ev,
                     "entry_valid_nsec": evn, "flags": 0}
    assert fh == lh.FileHandle(data)


def test_v3_limits_and_malformed_extensions() -> None:
    assert lh.V3.kernel_accepts(128) and not lh.V3.kernel_accepts(129)
    assert not lh.V3.kernel_accepts(0)
    with pytest.raises(lh.HandleError, match="exceed"):
        lh.V3.split_extensions(b"ab", 1)
    bad = struct.pack("<II", 12, 33) + b"\0" * 8  # 16 bytes, header claims 12
    with pytest.raises(lh.HandleError, match="bad extension"):
        lh.V3.split_extensions(bad, 2)
    with pytest.raises(lh.HandleError, match="u16"):
        lh.V3.encode_file_handle(lh.FileHandle(b"x" * 70000))


@given(subs=st.lists(st.tuples(st.integers(1, 60), u64, st.binary(max_size=40)),
                     min_size=1, max_size=16))
def test_v3_compound_round_trip(subs: list[tuple[int, int, bytes]]) -> None:
    reqs = [abi.pack_request(op, i, node, body) for i, (op, node, body) in enumerate(subs)]
    payload = lh.V3.encode_compound_request(reqs, lh.V3.COMPOUND_ATOMIC, 99)
    assert struct.unpack_from("<III", payload) == (len(subs), 2, 99)
    head, parsed = lh.V3.decode_compound_request(payload)
    assert head == {"count": len(subs), "flags": 2, "result_size": 99}
    assert [(h.opcode, h.nodeid, b) for h, b in parsed] == subs
    replies = [abi.pack_reply(i, 0, b) for i, (_o, _n, b) in enumerate(subs)]
    rhead, rparsed = lh.V3.decode_compound_reply(lh.V3.encode_compound_reply(replies))
    assert rhead["count"] == len(subs)
    assert [b for _h, b in rparsed] == [b for _o, _n, b in subs]


def test_v3_compound_errors() -> None:
    one = abi.pack_request(55, 0, 1, b"a\0")
    with pytest.raises(lh.HandleError, match="exceed"):
        lh.V3.encode_compound_request([one] * 17)
    payload = lh.V3.encode_compound_request([one, one])
    with pytest.raises(lh.HandleError, match="says 3 ops"):
        lh.V3.decode_compound_request(struct.pack("<III", 3, 0, 0) + payload[12:])
    with pytest.raises(lh.HandleError, match="out of bounds"):
        lh.V3.decode_compound_request(payload[:-1])


def test_dialect_choice_never_claims_what_is_not_offered() -> None:
    here = 0x73FFFFFB | 0x5FD << 32  # the INIT flags this kernel sends
    bit43 = lh.FUSE_HAS_LOOKUP_HANDLE

    def offer(minor, flags, wanted="auto"):
        return lookup_handle_offer(minor, flags, wanted).dialect

    assert offer(45, here) is None
    assert offer(45, here, "v3") is None
    assert offer(45, here | bit43) == "v2"  # 7.45 defines no bit 43: the RFC v2 series
    assert offer(45, here | bit43, "off") is None
    # 7.46 (Linux 7.3) owns bit 43: FUSE_HAS_IO_URING_BUFPOOL, offered with io_uring on
    assert offer(46, here | bit43) is None
    assert offer(46, here | bit43, "v2") is None
    assert "HAS_IO_URING_BUFPOOL" in lookup_handle_offer(46, here | bit43).why
    assert offer(46, here | bit43, "v3") == "v3"  # only when asked for by name
    with pytest.raises(ValueError):
        lookup_handle_offer(46, bit43, "v9")
    assert lh.opcode_names("v3")[56] == "MKOBJ_HANDLE" and lh.opcode_names(None) == {}

# ------------------------------------------------------------------ server engine ------


@pytest.fixture
def engine(tmp_path: Path):
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "f").write_bytes(b"marker")
    servers: list[Server] = []

    def make(**knobs: object) -> Server:
        cfg = Config(source=str(src), mountpoint=str(tmp_path), **knobs)  # type: ignore[arg-type]
        s = Server(cfg)
        servers.append(s)
        return s

    yield src, make
    for s in servers:
        s.close()


def _init(server: Server, minor: int, flags: int) -> abi.InitOut:
    req = abi.pack_request(26, 2, 0, abi.InitIn(7, minor, 65536, flags & 0xFFFFFFFF,
                                               flags >> 32).pack())
    reply = server.process(req)
    assert isinstance(reply, bytes)
    assert abi.OutHeader.unpack(reply).error == 0
    return abi.InitOut.unpack(reply, 16)


KERNEL_FLAGS = 0x73FFFFFB | 0x5FD << 32


def _reply(server: Server, req: bytes) -> tuple[int, bytes]:
    out = server.process(req)
    assert isinstance(out, bytes)
    hdr = abi.OutHeader.unpack(out)
    assert hdr.len == len(out)
    return hdr.error, out[16:]


def test_server_does_not_claim_lookup_handle_when_not_offered(engine) -> None:
    _src, make = engine
    s = make()
    out = _init(s, 45, KERNEL_FLAGS)
    assert not out.flags64 & lh.FUSE_HAS_LOOKUP_HANDLE
    assert out.max_handle_sz == 0 and s.neg.dialect is None
    err, _ = _reply(s, abi.pack_request(54, 4, 1, b"d\0"))
    assert err == -38  # ENOSYS: opcode 54 means nothing without the dialect


def test_server_v2_lookup_handle_bytes(engine) -> None:
    src, make = engine
    s = make(handle_size=40)
    out = _init(s, 45, KERNEL_FLAGS | lh.FUSE_HAS_LOOKUP_HANDLE)
    assert out.flags64 & lh.FUSE_HAS_LOOKUP_HANDLE and out.minor == 45
    assert out.max_handle_sz == 128 and lh.V2.init_reply_valid(out.max_handle_sz)
    err, body = _reply(s, abi.pack_request(54, 4, 1, lh.V2.encode_lookup_request(b"d")))
    assert err == 0
    d_entry, d_fh = lh.V2.decode_entry(body)
    assert d_entry.attr.ino == os.stat(src / "d").st_ino
    assert len(d_fh.data) == 40 and lh.V2.kernel_accepts(len(d_fh.data), out.max_handle_sz)
    # child lookup carrying the parent's handle as the extra in-arg
    req = abi.pack_request(54, 6, d_entry.nodeid, lh.V2.encode_lookup_request(b"f", d_fh))
    err, body = _reply(s, req)
    f_entry, f_fh = lh.V2.decode_entry(body)
    assert err == 0 and f_entry.attr.ino == os.stat(src / "d" / "f").st_ino
    assert s.node_from_handle(f_fh).ino == f_entry.attr.ino  # the handle finds the file again


@pytest.mark.parametrize("salt", ["none", "instance"])
def test_server_v2_finds_a_renumbered_node_by_its_handle(engine, salt: str) -> None:
    """A handle of an earlier instance of a counter-nodeid server: the new instance does not
    know the nodeid, and finds the file by the handle the kernel sent with LOOKUP_HANDLE
    "." (ESTALE without one, and for handles salted per instance)."""
    src, make = engine
    knobs = {"nodeid": "volatile", "generation": "bump", "handle_salt": salt}
    first = make(**knobs)
    _init(first, 45, KERNEL_FLAGS | lh.FUSE_HAS_LOOKUP_HANDLE)
    _err, body = _reply(first, abi.pack_request(54, 4, 1, lh.V2.encode_lookup_request(b"d")))
    d_entry, d_fh = lh.V2.decode_entry(body)
    req = abi.pack_request(54, 6, d_entry.nodeid, lh.V2.encode_lookup_request(b"f", d_fh))
    _err, body = _reply(first, req)
    f_entry, f_fh = lh.V2.decode_entry(body)
    second = make(**knobs)
    _init(second, 45, KERNEL_FLAGS | lh.FUSE_HAS_LOOKUP_HANDLE)
    err, _ = _reply(second, abi.pack_request(54, 8, f_entry.nodeid,
                                             lh.V2.encode_lookup_request(b".")))
    assert err == -errno.ESTALE  # the nodeid alone names nothing in this instance
    err, body = _reply(second, abi.pack_request(54, 10, f_entry.nodeid,
                                                lh.V2.encode_lookup_request(b".", f_fh)))
    if salt == "instance":
        assert err == -errno.ESTALE
        return
    assert err == 0
    entry, fh = lh.V2.decode_entry(body)
    assert entry.attr.ino == os.stat(src / "d" / "f").st_ino and fh == f_fh


def test_server_v2_appends_handles_to_create_and_mkdir(engine) -> None:
    src, make = engine
    s = make(handle_size=16)
    out = _init(s, 45, KERNEL_FLAGS | lh.FUSE_HAS_LOOKUP_HANDLE)
    assert out.flags64 & abi.INIT["DO_READDIRPLUS"]  # asked for on every dialect
    parent_fh = lh.V2.encode_file_handle(lh.FileHandle(b"p" * 16))
    # CREATE in: create_in, name, the parent's handle; out: entry + handle, then open_out
    req = abi.pack_request(35, 4, 1, abi.CreateIn(os.O_WRONLY, 0o100644).pack() + b"new\0" +
                           parent_fh, uid=0, gid=0)
    err, body = _reply(s, req)
    assert err == 0 and len(body) == 128 + 8 + 16 + 16
    entry, fh = lh.V2.decode_entry(body[:-16])
    assert entry.attr.ino == os.stat(src / "new").st_ino and len(fh.data) == 16
    assert abi.OpenOut.unpack(body, 128 + 8 + 16).fh != 0
    req = abi.pack_request(9, 6, 1, abi.MkdirIn(0o755).pack() + b"nd\0" + parent_fh)
    err, body = _reply(s, req)
    entry, fh = lh.V2.decode_entry(body)
    assert err == 0 and entry.attr.ino == os.stat(src / "nd").st_ino
    assert s.node_from_handle(fh).ino == entry.attr.ino


@pytest.mark.parametrize("mode,size", [("zero-handle", 0), ("oversize-handle", 129)])
def test_server_hostile_handle_sizes(engine, mode: str, size: int) -> None:
    _src, make = engine
    s = make(hostile=mode)
    out = _init(s, 45, KERNEL_FLAGS | lh.FUSE_HAS_LOOKUP_HANDLE)
    err, body = _reply(s, abi.pack_request(54, 4, 1, lh.V2.encode_lookup_request(b"d")))
    _entry, fh = lh.V2.decode_entry(body)
    assert err == 0 and len(fh.data) == size
    assert not lh.V2.kernel_accepts(len(fh.data), out.max_handle_sz)


def test_server_v3_compound_lookup_handle_statx(engine) -> None:
    src, make = engine
    s = make(lookup_handle="v3")  # 7.46 owns bit 43: v3 only when asked for by name
    out = _init(s, 46, KERNEL_FLAGS | lh.FUSE_HAS_LOOKUP_HANDLE)
    assert out.minor == 46 and out.flags64 & lh.FUSE_HAS_LOOKUP_HANDLE
    payload, extlen = lh.V3.encode_lookup_request(b"d")
    subs = [abi.pack_request(55, 0, 1, payload, total_extlen=extlen),
            abi.pack_request(52, 1, 1, abi.StatxIn(0, 0, 0, 0x7FF).pack())]
    err, body = _reply(s, abi.pack_request(54, 8, 0, lh.V3.encode_compound_request(subs)))
    assert err == 0
    head, parts = lh.V3.decode_compound_reply(body)
    assert head["count"] == 2 and [h.error for h, _ in parts] == [0, 0]
    entry, d_fh = lh.V3.decode_entry_reply(parts[0][1])
    statx = abi.StatxOut.unpack(parts[1][1]).stat
    assert statx.ino == os.stat(src / "d").st_ino  # STATX answered for the looked-up node
    # next level: the parent's handle rides in a FUSE_EXT_HANDLE extension
    payload, extlen = lh.V3.encode_lookup_request(b"f", d_fh)
    subs = [abi.pack_request(55, 0, entry["nodeid"], payload, total_extlen=extlen),
            abi.pack_request(52, 1, 1, abi.StatxIn(0).pack())]
    err, body = _reply(s, abi.pack_request(54, 10, 0, lh.V3.encode_compound_request(subs)))
    _head, parts = lh.V3.decode_compound_reply(body)
    assert abi.StatxOut.unpack(parts[1][1]).stat.ino == os.stat(src / "d" / "f").st_ino
    # a missing name fails its own sub-reply only
    payload, extlen = lh.V3.encode_lookup_request(b"nope")
    subs = [abi.pack_request(55, 0, 1, payload)]
    err, body = _reply(s, abi.pack_request(54, 12, 0, lh.V3.encode_compound_request(subs)))
    assert err == 0 and lh.V3.decode_compound_reply(body)[1][0][0].error == -2


def _readdirplus(s: Server, nodeid: int) -> bytes:
    err, body = _reply(s, abi.pack_request(27, 20, nodeid, abi.OpenIn(os.O_RDONLY).pack()))
    assert err == 0
    fh = abi.OpenOut.unpack(body).fh
    err, body = _reply(s, abi.pack_request(44, 22, nodeid,
                                           abi.ReadIn(fh, 0, 65536, 0, 0, 0).pack()))
    assert err == 0
    return body


def test_server_v2_readdirplus_records_carry_the_handle(engine) -> None:
    """On RFC v2 READDIRPLUS answers in fix 0012's layout: fuse_entry_out grown by the
    handle header, the entry's handle bytes (the same as LOOKUP_HANDLE gives), the dirent."""
    src, make = engine
    s = make(handle_size=40)
    out = _init(s, 45, KERNEL_FLAGS | lh.FUSE_HAS_LOOKUP_HANDLE)
    assert out.flags64 & lh.FUSE_HAS_LOOKUP_HANDLE
    err, body = _reply(s, abi.pack_request(54, 4, 1, lh.V2.encode_lookup_request(b"d")))
    d_entry, _fh = lh.V2.decode_entry(body)
    raw = _readdirplus(s, d_entry.nodeid)
    seen = {}
    pos = 0
    while pos < len(raw):
        entry, fh, dirent, used = lh.V2.decode_direntplus(raw, pos)
        seen[dirent.name] = (entry.nodeid, entry.attr.ino, fh)
        pos += used
    assert pos == len(raw)
    assert set(seen) == {b".", b"..", b"f"}
    nodeid, ino, fh = seen[b"f"]
    assert nodeid > 1 and ino == os.stat(src / "d" / "f").st_ino and len(fh.data) == 40
    err, body = _reply(s, abi.pack_request(54, 5, d_entry.nodeid,
                                           lh.V2.encode_lookup_request(b"f")))
    f_entry, f_fh = lh.V2.decode_entry(body)
    assert (f_entry.nodeid, f_fh) == (nodeid, fh)  # the handle LOOKUP_HANDLE gives
    assert seen[b"."][0] == 0 and seen[b"."][2] == lh.FileHandle(b"")  # no entry, no handle


def test_server_readdirplus_without_a_dialect_is_plain(engine) -> None:
    src, make = engine
    s = make()
    out = _init(s, 45, KERNEL_FLAGS)
    assert out.flags64 & abi.INIT["DO_READDIRPLUS"]
    err, body = _reply(s, abi.pack_request(1, 4, 1, b"d\0"))
    raw = _readdirplus(s, abi.EntryOut.unpack(body).nodeid)
    names = []
    pos = 0
    while pos < len(raw):
        d, used = abi.DirentPlus.unpack(raw, pos)
        names.append(d.dirent.name)
        if d.dirent.name == b"f":
            assert d.entry.attr.ino == os.stat(src / "d" / "f").st_ino
        pos += used
    assert names == [b".", b"..", b"f"]
