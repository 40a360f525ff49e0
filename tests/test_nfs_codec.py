"""Unit tests of the XDR/RPC codecs: RFC layouts built by hand, and real Ganesha replies
recorded by tests/data/nfs/record.py, checked against facts measured at recording time."""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
import xdrlib3
from hypothesis import given, settings
from hypothesis import strategies as st

from nfsconf.nfs import mount3, nfs3, nfs4
from nfsconf.nfs.rpc import (
    AuthNone,
    AuthSys,
    RecordDecoder,
    RpcRejected,
    XdrError,
    decode_reply,
    encode_call,
    encode_record,
)
from nfsconf.nfs.status import FileType, MountStatus, Nfs3Status, Nfs4Status

DATA = Path(__file__).parent / "data" / "nfs"
MANIFEST = json.loads((DATA / "manifest.json").read_text())


def recorded(name: str) -> bytes:
    """The procedure result of a recorded reply (RPC header checked and stripped)."""
    _, body = decode_reply((DATA / f"{name}.bin").read_bytes())
    return body


def words(*values: int) -> bytes:
    return struct.pack(f">{len(values)}I", *values)


# --- record marking ------------------------------------------------------------------------

def test_record_marking_layout() -> None:
    # RFC 5531 §11: 4-byte mark, high bit = last fragment, low 31 bits = length.
    assert encode_record(b"abcdef", max_fragment=4) == (
        words(4) + b"abcd" + words(0x80000002) + b"ef")
    assert encode_record(b"") == words(0x80000000)


def test_multi_fragment_recorded_reply() -> None:
    msg = (DATA / "v3_read_big.bin").read_bytes()
    stream = encode_record(msg, max_fragment=1000) + encode_record(msg, max_fragment=7)
    dec = RecordDecoder()
    out: list[bytes] = []
    for i in range(0, len(stream), 333):  # chunking unrelated to fragment boundaries
        out += dec.feed(stream[i:i + 333])
    assert out == [msg, msg]
    assert dec.pending == 0
    res = nfs3.decode_read(decode_reply(out[1])[1])
    assert res.ok and res.eof and len(res.data) == MANIFEST["big_size"]
    assert res.data == bytes(range(256)) * (MANIFEST["big_size"] // 256)


@given(st.lists(st.binary(max_size=300), max_size=5), st.integers(1, 64),
       st.lists(st.integers(1, 50), min_size=1, max_size=20))
def test_record_round_trip(payloads: list[bytes], frag: int, cuts: list[int]) -> None:
    stream = b"".join(encode_record(p, frag) for p in payloads)
    dec, out, pos, i = RecordDecoder(), [], 0, 0
    while pos < len(stream):
        step = cuts[i % len(cuts)]
        out += dec.feed(stream[pos:pos + step])
        pos, i = pos + step, i + 1
    assert out == payloads
    assert dec.pending == 0


def test_record_too_large_is_one_clear_error() -> None:
    with pytest.raises(XdrError):
        RecordDecoder(max_record=10).feed(words(0x80000000 | 11) + bytes(11))


# --- RPC messages ----------------------------------------------------------------------------

def test_call_layout_auth_sys() -> None:
    auth = AuthSys(uid=1000, gid=100, gids=(4, 27), machinename="box", stamp=7)
    body = words(7, 3) + b"box\0" + words(1000, 100, 2, 4, 27)
    expected = (words(0x1234, 0, 2, 100003, 3, 1) + words(1, len(body)) + body
                + words(0, 0) + b"ARGS")
    assert encode_call(0x1234, 100003, 3, 1, auth, b"ARGS") == expected


def test_call_layout_auth_none() -> None:
    assert encode_call(1, 100005, 3, 0, AuthNone(), b"") == words(1, 0, 2, 100005, 3, 0,
                                                                   0, 0, 0, 0)


def test_reply_errors_are_rejections() -> None:
    accepted = words(9, 1, 0, 0, 0)  # xid, REPLY, MSG_ACCEPTED, verifier AUTH_NONE, len 0
    assert decode_reply(accepted + words(0) + b"RES!") == (9, b"RES!")
    with pytest.raises(RpcRejected, match="PROG_UNAVAIL"):
        decode_reply(accepted + words(1))
    with pytest.raises(RpcRejected, match=r"PROG_MISMATCH.*2\.\.4"):
        decode_reply(accepted + words(2, 2, 4))
    with pytest.raises(RpcRejected, match="AUTH_TOOWEAK"):
        decode_reply(words(9, 1, 1, 1, 5))
    with pytest.raises(RpcRejected, match="RPC_MISMATCH"):
        decode_reply(words(9, 1, 1, 0, 2, 2))
    with pytest.raises(XdrError):
        decode_reply(words(9, 0))  # a CALL, not a REPLY
    with pytest.raises(XdrError):
        decode_reply(words(9, 1, 0, 0))


# --- recorded Ganesha replies ----------------------------------------------------------------

def test_mount_replies() -> None:
    ok = mount3.decode_mnt(recorded("mnt_ok"))
    assert ok.status is MountStatus.MNT3_OK and 0 < len(ok.fh) <= 64
    assert 1 in ok.auth_flavors  # AUTH_SYS offered
    assert mount3.decode_mnt(recorded("mnt_noent")).status in (
        MountStatus.MNT3ERR_NOENT, MountStatus.MNT3ERR_ACCES)
    assert [e.path for e in mount3.decode_export(recorded("export"))] == [
        MANIFEST["export_path"]]


def test_v3_attr_lookup_read() -> None:
    ino = MANIFEST["ino"]
    root = nfs3.decode_getattr(recorded("v3_getattr_root"))
    assert root.ok and root.attr is not None
    assert (root.attr.type, root.attr.fileid) == (FileType.DIR, ino["."])
    look = nfs3.decode_lookup(recorded("v3_lookup_file"))
    assert look.ok and look.attr is not None and look.dir_attr is not None
    assert (look.attr.type, look.attr.fileid) == (FileType.REG, ino["hello.txt"])
    assert look.attr.size == len(MANIFEST["content"])
    assert look.dir_attr.fileid == ino["."]
    read = nfs3.decode_read(recorded("v3_read_file"))
    assert (read.status, read.data, read.eof) == (
        Nfs3Status.NFS3_OK, MANIFEST["content"].encode(), True)
    noent = nfs3.decode_lookup(recorded("v3_lookup_noent"))
    assert noent.status is Nfs3Status.NFS3ERR_NOENT and noent.fh == b""
    dotdot = nfs3.decode_lookup(recorded("v3_lookup_dotdot"))
    assert dotdot.ok and dotdot.attr is not None and dotdot.attr.fileid == ino["."]


def test_v3_readdirplus() -> None:
    res = nfs3.decode_readdirplus(recorded("v3_readdirplus_sub"))
    assert res.ok and res.eof
    names = sorted(e.name for e in res.entries)
    assert names == sorted([".", "..", *MANIFEST["sub_names"]])
    by_name = {e.name: e for e in res.entries}
    assert by_name["one"].fileid == MANIFEST["ino"]["sub/one"]
    assert by_name["one"].fh and by_name["one"].attr is not None
    assert by_name["."].fileid == MANIFEST["ino"]["sub"]
    assert len({e.cookie for e in res.entries}) == len(res.entries)


def test_v3_errors_create_remove() -> None:
    assert nfs3.decode_getattr(recorded("v3_getattr_badhandle")).status is (
        Nfs3Status.NFS3ERR_BADHANDLE)
    assert nfs3.decode_getattr(recorded("v3_getattr_stale")).status is Nfs3Status.NFS3ERR_STALE
    made = nfs3.decode_create(recorded("v3_create"))
    assert made.ok and made.fh and made.attr is not None
    assert made.attr.mode & 0o777 == 0o640 and made.attr.type is FileType.REG
    assert nfs3.decode_remove(recorded("v3_remove")).ok
    assert nfs3.decode_remove(recorded("v3_remove_noent")).status is Nfs3Status.NFS3ERR_NOENT


def test_v4_session_setup() -> None:
    eid = nfs4.decode_compound(recorded("v4_exchange_id"))
    assert eid.ok and eid.results[0].op is nfs4.Op.EXCHANGE_ID
    assert eid.results[0].value.clientid != 0
    cs = nfs4.decode_compound(recorded("v4_create_session"))
    assert cs.ok and len(cs.results[0].value.sessionid) == 16
    assert cs.results[0].value.max_ops >= 6
    bad = nfs4.decode_compound(recorded("v4_badsession"))
    assert bad.status is Nfs4Status.NFS4ERR_BADSESSION
    assert bad.sequence_status is Nfs4Status.NFS4ERR_BADSESSION and bad.results == []


def test_v4_lookup_getattr_read() -> None:
    ino = MANIFEST["ino"]
    res = nfs4.decode_compound(recorded("v4_lookup_file"))
    assert res.ok and res.sequence is not None
    assert [r.op for r in res.results] == [nfs4.Op.PUTROOTFH, nfs4.Op.LOOKUP, nfs4.Op.LOOKUP,
                                          nfs4.Op.GETFH, nfs4.Op.GETATTR]
    assert res.fh and res.attrs == {"type": FileType.REG, "fileid": ino["hello.txt"],
                                    "size": len(MANIFEST["content"])}
    many = nfs4.decode_compound(recorded("v4_getattr_many")).attrs
    assert many is not None
    assert many["fileid"] == ino["hello.txt"] and many["filehandle"] == res.fh
    assert int(nfs4.Attr.FILEID) in many["supported_attrs"]
    assert many["mode"] & 0o777 == 0o644 and many["numlinks"] == 1
    read = nfs4.decode_compound(recorded("v4_read")).last(nfs4.Op.READ)
    assert read is not None and read.value == nfs4.ReadRes(True, MANIFEST["content"].encode())


def test_v4_lookupp_and_errors() -> None:
    up = nfs4.decode_compound(recorded("v4_lookupp"))
    assert up.ok and up.attrs is not None and up.attrs["fileid"] == MANIFEST["ino"]["."]
    notdir = nfs4.decode_compound(recorded("v4_lookupp_notdir"))
    assert notdir.status is Nfs4Status.NFS4ERR_NOTDIR
    assert notdir.failed is not None and notdir.failed.op is nfs4.Op.LOOKUPP
    noent = nfs4.decode_compound(recorded("v4_lookup_noent"))
    assert noent.status is Nfs4Status.NFS4ERR_NOENT and noent.fh is None
    bad = nfs4.decode_compound(recorded("v4_putfh_badhandle"))
    assert bad.status is Nfs4Status.NFS4ERR_BADHANDLE
    assert [r.op for r in bad.results] == [nfs4.Op.PUTFH]


DECODERS = {
    "mnt": mount3.decode_mnt, "export": mount3.decode_export,
    "v3_getattr": nfs3.decode_getattr, "v3_lookup": nfs3.decode_lookup,
    "v3_read": nfs3.decode_read, "v3_readdirplus": nfs3.decode_readdirplus,
    "v3_create": nfs3.decode_create, "v3_remove": nfs3.decode_remove,
    "v4": nfs4.decode_compound,
}


def _decoder(name: str) -> Callable[[bytes], object]:
    return DECODERS[max((k for k in DECODERS if name.startswith(k)), key=len)]


@pytest.mark.parametrize("name", sorted(p.stem for p in DATA.glob("*.bin")))
def test_truncated_replies_raise_xdr_error(name: str) -> None:
    body = recorded(name)
    decode = _decoder(name)
    decode(body)  # whole body decodes
    for cut in range(0, len(body), max(1, len(body) // 40)):
        with pytest.raises(XdrError):
            decode(body[:cut])


# --- smaller pieces -------------------------------------------------------------------------

def test_status_names_and_unknown_values() -> None:
    assert Nfs3Status(70).name == "NFS3ERR_STALE" and Nfs3Status(10001).name == "NFS3ERR_BADHANDLE"
    assert Nfs4Status(70) is Nfs4Status.NFS4ERR_STALE
    assert Nfs4Status(10014) is Nfs4Status.NFS4ERR_FHEXPIRED
    assert Nfs4Status(10013) is Nfs4Status.NFS4ERR_GRACE
    odd = Nfs4Status(12345)
    assert odd == 12345 and odd.name == "UNKNOWN_12345"


@given(st.sets(st.integers(0, 95)))
def test_bitmap_round_trip(bits: set[int]) -> None:
    p = xdrlib3.Packer()
    nfs4._pack_bitmap(p, bits)
    assert nfs4._bitmap(xdrlib3.Unpacker(p.get_buffer())) == sorted(bits)


@settings(max_examples=50)
@given(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1), st.sampled_from(list(FileType)[:7]))
def test_fattr4_decode_against_rfc_layout(size: int, fileid: int, ftype: FileType) -> None:
    # bitmap4 {TYPE(1), SIZE(4), FILEID(20)} in one word, then attr_vals in bit order.
    vals = struct.pack(">IQQ", ftype, size, fileid)
    raw = words(1, (1 << 1) | (1 << 4) | (1 << 20), len(vals)) + vals
    out = nfs4.decode_fattr4(xdrlib3.Unpacker(raw))
    assert out == {"type": ftype, "size": size, "fileid": fileid}


def test_compound_call_layout() -> None:
    ops = [nfs4.putfh(b"\x01\x02\x03"), nfs4.lookup("ab"), nfs4.getattr()]
    got = nfs4.encode_compound(ops, b"t", 1)
    expected = (words(1) + b"t\0\0\0" + words(1, 3)
                + words(22, 3) + b"\x01\x02\x03\0"
                + words(15, 2) + b"ab\0\0"
                + words(9, 1, (1 << 1) | (1 << 4) | (1 << 20)))
    assert got == expected


def test_unknown_attribute_is_one_clear_error() -> None:
    raw = words(1, 1 << 7, 4, 0)  # NAMED_ATTR: not decodable by this client
    with pytest.raises(XdrError, match="attribute 7"):
        nfs4.decode_fattr4(xdrlib3.Unpacker(raw))
