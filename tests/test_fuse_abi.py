"""Byte-level tests of the FUSE ABI codecs (nfsconf.fuse.abi): sizes, layouts, round trips."""

from __future__ import annotations

import struct
from dataclasses import fields

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nfsconf.fuse import abi
from nfsconf.fuse.initflags import flag_names

# Sizes as sizeof() gives them for include/uapi/linux/fuse.h 7.45 on x86-64.
C_SIZES = {
    abi.InHeader: 40, abi.OutHeader: 16, abi.Attr: 88, abi.EntryOut: 128, abi.AttrOut: 104,
    abi.InitIn: 64, abi.InitOut: 64, abi.GetattrIn: 16, abi.SetattrIn: 88, abi.OpenIn: 8,
    abi.CreateIn: 16, abi.OpenOut: 16, abi.ReleaseIn: 24, abi.FlushIn: 24, abi.ReadIn: 40,
    abi.WriteIn: 40, abi.WriteOut: 8, abi.Kstatfs: 80, abi.FsyncIn: 16, abi.AccessIn: 8,
    abi.MknodIn: 16, abi.MkdirIn: 8, abi.RenameIn: 8, abi.Rename2In: 16, abi.LinkIn: 8,
    abi.ForgetIn: 8, abi.ForgetOne: 16, abi.BatchForgetIn: 8, abi.InterruptIn: 8,
    abi.StatxIn: 24, abi.Statx: 256, abi.StatxOut: 288, abi.ExtHeader: 8,
}

FLAT = [c for c in C_SIZES if c not in (abi.EntryOut, abi.AttrOut, abi.StatxOut)]


@pytest.mark.parametrize("cls", list(C_SIZES), ids=lambda c: c.__name__)
def test_struct_sizes_match_the_c_header(cls: type[abi.WireStruct]) -> None:
    assert cls.nbytes() == C_SIZES[cls]


def _int_strategy(code: str) -> st.SearchStrategy[int]:
    size = struct.calcsize("<" + code)
    if code.islower():
        return st.integers(-(1 << (8 * size - 1)), (1 << (8 * size - 1)) - 1)
    return st.integers(0, (1 << (8 * size)) - 1)


def _field_codes(cls: type[abi.WireStruct]) -> list[str]:
    codes = []
    fmt = cls.FMT.format.lstrip("<")
    i = 0
    while i < len(fmt):
        num = ""
        while fmt[i].isdigit():
            num += fmt[i]
            i += 1
        c = fmt[i]
        i += 1
        if c != "x":
            codes += [c] * int(num or 1)
    return codes


def _instances(cls: type[abi.WireStruct]) -> st.SearchStrategy[abi.WireStruct]:
    codes = _field_codes(cls)
    assert len(codes) == len(fields(cls)), cls  # one format item per dataclass field
    return st.tuples(*[_int_strategy(c) for c in codes]).map(lambda t: cls(*t))


@pytest.mark.parametrize("cls", FLAT, ids=lambda c: c.__name__)
@given(data=st.data())
def test_flat_struct_round_trip(cls: type[abi.WireStruct], data: st.DataObject) -> None:
    obj = data.draw(_instances(cls))
    raw = obj.pack()
    assert len(raw) == cls.nbytes()
    assert cls.unpack(raw) == obj
    assert cls.unpack(b"\xaa" * 5 + raw, 5) == obj


@given(head=st.tuples(*[_int_strategy("Q")] * 4, *[_int_strategy("I")] * 2),
       attr=_instances(abi.Attr))
def test_entry_out_round_trip_and_layout(head: tuple[int, ...], attr: abi.Attr) -> None:
    e = abi.EntryOut(*head, attr)
    raw = e.pack()
    assert len(raw) == 128
    assert abi.EntryOut.unpack(raw) == e
    assert struct.unpack_from("<QQ", raw) == (head[0], head[1])  # nodeid, generation first
    assert raw[40:] == attr.pack()  # fuse_attr starts at offset 40


@given(a=_int_strategy("Q"), n=_int_strategy("I"), attr=_instances(abi.Attr))
def test_attr_out_round_trip(a: int, n: int, attr: abi.Attr) -> None:
    o = abi.AttrOut(a, n, attr)
    raw = o.pack()
    assert len(raw) == 104 and raw[12:16] == b"\0\0\0\0"  # dummy stays zero
    assert abi.AttrOut.unpack(raw) == o


@given(a=_int_strategy("Q"), n=_int_strategy("I"), f=_int_strategy("I"),
       sx=_instances(abi.Statx))
def test_statx_out_round_trip(a: int, n: int, f: int, sx: abi.Statx) -> None:
    o = abi.StatxOut(a, n, f, sx)
    assert abi.StatxOut.unpack(o.pack()) == o


def test_unpack_rejects_short_buffers() -> None:
    with pytest.raises(ValueError, match="need 40 bytes"):
        abi.InHeader.unpack(b"\0" * 39)
    with pytest.raises(ValueError, match="EntryOut"):
        abi.EntryOut.unpack(b"\0" * 127)


def test_init_in_forms_and_flags2() -> None:
    # What this kernel sent (recorded from a real INIT): flags 0x73fffffb, flags2 0x5fd.
    raw = struct.pack("<IIIII", 7, 45, 131072, 0x73FFFFFB, 0x5FD) + b"\0" * 44
    ini = abi.InitIn.unpack(raw)
    names = flag_names(ini.flags64, ini.minor)
    for want in ("EXPORT_SUPPORT", "INIT_EXT", "NO_EXPORT_SUPPORT", "HAS_RESEND",
                 "REQUEST_TIMEOUT", "SECURITY_CTX"):
        assert want in names
    assert not any("LOOKUP_HANDLE" in n for n in names)
    # flags2 only counts when INIT_EXT is set
    no_ext = abi.InitIn(7, 45, 0, abi.INIT["EXPORT_SUPPORT"], 0x5FD)
    assert no_ext.flags64 == abi.INIT["EXPORT_SUPPORT"]
    # pre-7.36 kernels send 16 bytes, ancient ones 8
    assert abi.InitIn.unpack(raw[:16]) == abi.InitIn(7, 45, 131072, 0x73FFFFFB, 0)
    assert abi.InitIn.unpack(raw[:8]) == abi.InitIn(7, 45, 0, 0, 0)
    with pytest.raises(ValueError):
        abi.InitIn.unpack(raw[:7])


def test_init_out_layout() -> None:
    o = abi.InitOut(7, 45, 4096, 0x11, max_background=16, congestion_threshold=12,
                    max_write=131072, time_gran=1, max_pages=32, flags2=0x40,
                    max_stack_depth=2, request_timeout=9, max_handle_sz=128)
    raw = o.pack()
    assert struct.unpack_from("<IIII", raw) == (7, 45, 4096, 0x11)
    assert struct.unpack_from("<HHII", raw, 16) == (16, 12, 131072, 1)
    assert struct.unpack_from("<HHIIHH", raw, 28) == (32, 0, 0x40, 2, 9, 128)
    assert raw[44:] == b"\0" * 20
    assert abi.InitOut.split_flags(1 << 38 | 1 << 4) == (1 << 4, 1 << 6)


def test_flags_are_named_by_the_kernels_minor() -> None:
    bits = 1 << 4 | 1 << 38 | 1 << 43 | 1 << 63
    # 7.45 defines no bit 43 (nor 63); 7.46 names bit 43 after mainline's io_uring bufpool
    assert flag_names(bits, 45) == ["EXPORT_SUPPORT", "NO_EXPORT_SUPPORT", "bit43", "bit63"]
    assert flag_names(bits, 46) == ["EXPORT_SUPPORT", "NO_EXPORT_SUPPORT",
                                    "HAS_IO_URING_BUFPOOL", "bit63"]
    # the RFC's name only where the decision says the kernel carries that RFC
    assert flag_names(1 << 43, 45, "v2") == ["HAS_LOOKUP_HANDLE(v2)"]
    # a bit is unnamed below the minor that introduced it
    assert flag_names(1 << 42, 42) == ["bit42"] and flag_names(1 << 42, 43) == ["REQUEST_TIMEOUT"]
    assert abi.INIT["HAS_RESEND"] == 1 << 39 and abi.INIT["REQUEST_TIMEOUT"] == 1 << 42


names = st.binary(min_size=1, max_size=255).filter(lambda b: b"\0" not in b and b"/" not in b)


@given(ino=_int_strategy("Q"), off=_int_strategy("Q"), typ=st.integers(0, 15), name=names)
def test_dirent_round_trip_and_alignment(ino: int, off: int, typ: int, name: bytes) -> None:
    d = abi.Dirent(ino, off, typ, name)
    raw = d.pack()
    assert len(raw) % 8 == 0 and len(raw) - (24 + len(name)) < 8
    back, used = abi.Dirent.unpack(raw + b"\xff" * 8)
    assert back == d and used == len(raw)


@given(attr=_instances(abi.Attr), name=names)
def test_direntplus_round_trip(attr: abi.Attr, name: bytes) -> None:
    d = abi.DirentPlus(abi.EntryOut(5, 1, 1, 1, 0, 0, attr), abi.Dirent(attr.ino, 3, 8, name))
    raw = d.pack()
    assert abi.DirentPlus.unpack(raw) == (d, len(raw))


def test_reply_and_notify_headers() -> None:
    raw = abi.pack_reply(77, 2, b"xyz")  # ENOENT, sign normalised
    assert abi.OutHeader.unpack(raw) == abi.OutHeader(19, -2, 77)
    note = abi.pack_notify(abi.NOTIFY_INC_EPOCH)
    assert note == struct.pack("<IiQ", 16, 8, 0)
    assert abi.NOTIFY_CODES[7] == "RESEND"


def test_request_builder_and_split_names() -> None:
    req = abi.pack_request(abi.OP["RENAME"], 9, 1, struct.pack("<Q", 5) + b"a\0bb\0")
    h = abi.InHeader.unpack(req)
    assert (h.len, h.opcode, h.unique, h.nodeid) == (len(req), 12, 9, 1)
    assert abi.split_names(req[48:], 2) == [b"a", b"bb"]
    with pytest.raises(ValueError, match="NUL"):
        abi.split_names(b"abc", 1)
