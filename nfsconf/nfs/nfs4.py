"""NFSv4.1 client (RFC 8881): COMPOUND with a one-slot session.

Operations are built with the small constructors below (``putrootfh()``, ``lookup(name)``,
...) and sent with ``Nfs4Client.compound(ops)``, which prepends SEQUENCE. The reply keeps
every operation's named status, so a scenario can record e.g. PUTFH → NFS4ERR_STALE.

The client establishes its session lazily (EXCHANGE_ID, CREATE_SESSION, RECLAIM_COMPLETE)
and, unless ``recover=False``, re-establishes it when the server lost it: after a dropped
connection it reconnects and retries on the same session, and on NFS4ERR_BADSESSION,
NFS4ERR_DEADSESSION or NFS4ERR_STALE_CLIENTID it makes a new client ID and session, then
retries once. ``sessions_established`` counts sessions so tests can see a recovery.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import xdrlib3

from .rpc import (
    PROG_NFS,
    Auth,
    RpcClient,
    RpcError,
    RpcTransportError,
    XdrError,
    unpacker,
    xdr_guard,
)
from .status import FileType, Nfs4Status

NFS4_FHSIZE = 128
_COMPOUND = 1
_ANON_STATEID = bytes(16)


class Op(IntEnum):
    GETATTR = 9
    GETFH = 10
    LOOKUP = 15
    LOOKUPP = 16
    PUTFH = 22
    PUTROOTFH = 24
    READ = 25
    RESTOREFH = 31
    SAVEFH = 32
    EXCHANGE_ID = 42
    CREATE_SESSION = 43
    DESTROY_SESSION = 44
    SEQUENCE = 53
    DESTROY_CLIENTID = 57
    RECLAIM_COMPLETE = 58
    ILLEGAL = 10044


class Attr(IntEnum):
    """fattr4 attribute numbers this client can decode."""

    SUPPORTED_ATTRS = 0
    TYPE = 1
    FH_EXPIRE_TYPE = 2
    CHANGE = 3
    SIZE = 4
    FSID = 8
    LEASE_TIME = 10
    RDATTR_ERROR = 11
    FILEHANDLE = 19
    FILEID = 20
    MODE = 33
    NUMLINKS = 35
    MOUNTED_ON_FILEID = 55


def _bitmap(u: xdrlib3.Unpacker) -> list[int]:
    words = u.unpack_array(u.unpack_uint)
    return [32 * i + b for i, w in enumerate(words) for b in range(32) if w >> b & 1]


def _pack_bitmap(p: xdrlib3.Packer, bits: Iterable[int]) -> None:
    bits = list(bits)
    words = [0] * (max(bits) // 32 + 1 if bits else 0)
    for b in bits:
        words[b // 32] |= 1 << (b % 32)
    p.pack_array(words, p.pack_uint)


_KNOWN_ATTRS = {int(a) for a in Attr}
_ATTR_DECODERS: dict[Attr, Callable[[xdrlib3.Unpacker], Any]] = {
    Attr.SUPPORTED_ATTRS: _bitmap,
    Attr.TYPE: lambda u: FileType(u.unpack_uint()),
    Attr.FH_EXPIRE_TYPE: lambda u: u.unpack_uint(),
    Attr.CHANGE: lambda u: u.unpack_uhyper(),
    Attr.SIZE: lambda u: u.unpack_uhyper(),
    Attr.FSID: lambda u: (u.unpack_uhyper(), u.unpack_uhyper()),
    Attr.LEASE_TIME: lambda u: u.unpack_uint(),
    Attr.RDATTR_ERROR: lambda u: Nfs4Status(u.unpack_uint()),
    Attr.FILEHANDLE: lambda u: u.unpack_opaque(),
    Attr.FILEID: lambda u: u.unpack_uhyper(),
    Attr.MODE: lambda u: u.unpack_uint(),
    Attr.NUMLINKS: lambda u: u.unpack_uint(),
    Attr.MOUNTED_ON_FILEID: lambda u: u.unpack_uhyper(),
}


def decode_fattr4(u: xdrlib3.Unpacker) -> dict[str, Any]:
    """fattr4 → {"type": FileType.REG, "size": 6, "fileid": ...} (lower-case attr names)."""
    bits = _bitmap(u)
    vals = unpacker(u.unpack_opaque())
    out: dict[str, Any] = {}
    for bit in bits:
        if bit not in _KNOWN_ATTRS:
            raise XdrError(f"server returned attribute {bit}, which this client cannot decode")
        out[Attr(bit).name.lower()] = _ATTR_DECODERS[Attr(bit)](vals)
    vals.done()
    return out


# --- operation arguments ---------------------------------------------------------------------

@dataclass(frozen=True)
class OpArgs:
    """One operation of a COMPOUND, its arguments already XDR-encoded."""

    op: Op
    args: bytes = b""


def _args(op: Op, fill: Callable[[xdrlib3.Packer], None] | None = None) -> OpArgs:
    p = xdrlib3.Packer()
    if fill is not None:
        fill(p)
    return OpArgs(op, p.get_buffer())


def _utf8(name: str | bytes) -> bytes:
    return name if isinstance(name, bytes) else name.encode("utf-8", "surrogateescape")


def putrootfh() -> OpArgs:
    return OpArgs(Op.PUTROOTFH)


def putfh(fh: bytes) -> OpArgs:
    return _args(Op.PUTFH, lambda p: p.pack_opaque(fh))


def lookup(name: str | bytes) -> OpArgs:
    return _args(Op.LOOKUP, lambda p: p.pack_string(_utf8(name)))


def lookupp() -> OpArgs:
    return OpArgs(Op.LOOKUPP)


def savefh() -> OpArgs:
    return _args(Op.SAVEFH)


def restorefh() -> OpArgs:
    return _args(Op.RESTOREFH)


def getfh() -> OpArgs:
    return OpArgs(Op.GETFH)


def getattr(*attrs: Attr) -> OpArgs:  # shadows the builtin on purpose: the NFS op's name
    wanted = attrs or (Attr.TYPE, Attr.SIZE, Attr.FILEID)
    return _args(Op.GETATTR, lambda p: _pack_bitmap(p, wanted))


def read(offset: int = 0, count: int = 65536, stateid: bytes = _ANON_STATEID) -> OpArgs:
    def fill(p: xdrlib3.Packer) -> None:
        p.pack_fopaque(16, stateid)
        p.pack_uhyper(offset)
        p.pack_uint(count)
    return _args(Op.READ, fill)


def reclaim_complete(one_fs: bool = False) -> OpArgs:
    return _args(Op.RECLAIM_COMPLETE, lambda p: p.pack_bool(one_fs))


def destroy_session(sessionid: bytes) -> OpArgs:
    return _args(Op.DESTROY_SESSION, lambda p: p.pack_fopaque(16, sessionid))


def destroy_clientid(clientid: int) -> OpArgs:
    return _args(Op.DESTROY_CLIENTID, lambda p: p.pack_uhyper(clientid))


def exchange_id(owner: bytes, verifier: bytes, flags: int = 0) -> OpArgs:
    def fill(p: xdrlib3.Packer) -> None:
        p.pack_fopaque(8, verifier)
        p.pack_opaque(owner)
        p.pack_uint(flags)
        p.pack_uint(0)  # state protection SP4_NONE
        p.pack_uint(0)  # no implementation id
    return _args(Op.EXCHANGE_ID, fill)


def create_session(clientid: int, sequence: int, max_ops: int = 16) -> OpArgs:
    def channel(p: xdrlib3.Packer, size: int, cached: int, ops: int) -> None:
        # headerpad, maxrequest, maxresponse, maxresponse_cached, maxops, maxrequests, no RDMA
        for word in (0, size, size, cached, ops, 1, 0):
            p.pack_uint(word)

    def fill(p: xdrlib3.Packer) -> None:
        p.pack_uhyper(clientid)
        p.pack_uint(sequence)
        p.pack_uint(0)  # flags: no persistence, no back channel on this connection
        channel(p, 1 << 20 | 4096, 64 << 10, max_ops)
        channel(p, 4096, 0, 2)
        p.pack_uint(0x40000000)  # callback program; unused without a back channel
        p.pack_uint(1)  # one callback security parameter: AUTH_NONE
        p.pack_uint(0)
    return _args(Op.CREATE_SESSION, fill)


def sequence(sessionid: bytes, seqid: int, slot: int = 0, cachethis: bool = False) -> OpArgs:
    def fill(p: xdrlib3.Packer) -> None:
        p.pack_fopaque(16, sessionid)
        for word in (seqid, slot, slot):
            p.pack_uint(word)
        p.pack_bool(cachethis)
    return _args(Op.SEQUENCE, fill)


# --- results ---------------------------------------------------------------------------------

@dataclass
class ExchangeIdRes:
    clientid: int
    sequenceid: int
    flags: int
    server_owner: bytes
    server_scope: bytes


@dataclass
class CreateSessionRes:
    sessionid: bytes
    sequenceid: int
    flags: int
    max_ops: int


@dataclass
class SequenceRes:
    sessionid: bytes
    sequenceid: int
    slotid: int
    highest_slotid: int
    target_highest_slotid: int
    status_flags: int


@dataclass
class ReadRes:
    eof: bool
    data: bytes


def _decode_exchange_id(u: xdrlib3.Unpacker) -> ExchangeIdRes:
    clientid, seq, flags = u.unpack_uhyper(), u.unpack_uint(), u.unpack_uint()
    how = u.unpack_uint()
    if how == 1:  # SP4_MACH_CRED: must_enforce and must_allow bitmaps
        _bitmap(u)
        _bitmap(u)
    elif how != 0:
        raise XdrError(f"EXCHANGE_ID state protection {how} not supported")
    u.unpack_uhyper()  # so_minor_id
    owner, scope = u.unpack_opaque(), u.unpack_opaque()
    for _ in range(u.unpack_uint()):  # nfs_impl_id4<1>: domain, name, date
        u.unpack_string()
        u.unpack_string()
        u.unpack_hyper()
        u.unpack_uint()
    return ExchangeIdRes(clientid, seq, flags, owner, scope)


def _decode_channel(u: xdrlib3.Unpacker) -> int:
    words = [u.unpack_uint() for _ in range(6)]
    u.unpack_array(u.unpack_uint)  # rdma_ird
    return words[4]  # maxoperations


def _decode_create_session(u: xdrlib3.Unpacker) -> CreateSessionRes:
    sid, seq, flags = u.unpack_fopaque(16), u.unpack_uint(), u.unpack_uint()
    max_ops = _decode_channel(u)
    _decode_channel(u)
    return CreateSessionRes(sid, seq, flags, max_ops)


def _decode_sequence(u: xdrlib3.Unpacker) -> SequenceRes:
    return SequenceRes(u.unpack_fopaque(16), *(u.unpack_uint() for _ in range(5)))


_RESULT_DECODERS: dict[Op, Callable[[xdrlib3.Unpacker], Any] | None] = {
    Op.GETATTR: decode_fattr4,
    Op.GETFH: lambda u: u.unpack_opaque(),
    Op.LOOKUP: None,
    Op.LOOKUPP: None,
    Op.PUTFH: None,
    Op.PUTROOTFH: None,
    Op.READ: lambda u: ReadRes(u.unpack_bool(), u.unpack_opaque()),
    Op.SAVEFH: None,
    Op.RESTOREFH: None,
    Op.EXCHANGE_ID: _decode_exchange_id,
    Op.CREATE_SESSION: _decode_create_session,
    Op.DESTROY_SESSION: None,
    Op.SEQUENCE: _decode_sequence,
    Op.DESTROY_CLIENTID: None,
    Op.RECLAIM_COMPLETE: None,
    Op.ILLEGAL: None,
}


@dataclass
class OpResult:
    op: Op
    status: Nfs4Status
    value: Any = None

    @property
    def ok(self) -> bool:
        return self.status == Nfs4Status.NFS4_OK


@dataclass
class CompoundRes:
    status: Nfs4Status
    tag: bytes
    results: list[OpResult]
    sequence: SequenceRes | None = None
    sequence_status: Nfs4Status | None = None

    @property
    def ok(self) -> bool:
        return self.status == Nfs4Status.NFS4_OK

    def last(self, op: Op) -> OpResult | None:
        found = [r for r in self.results if r.op == op]
        return found[-1] if found else None

    @property
    def failed(self) -> OpResult | None:
        """The operation that stopped the compound, if one did."""
        bad = [r for r in self.results if not r.ok]
        return bad[0] if bad else None

    @property
    def fh(self) -> bytes | None:
        r = self.last(Op.GETFH)
        return r.value if r is not None and r.ok else None

    @property
    def attrs(self) -> dict[str, Any] | None:
        r = self.last(Op.GETATTR)
        return r.value if r is not None and r.ok else None


_KNOWN_OPS = {int(o) for o in Op}


def encode_compound(ops: Iterable[OpArgs], tag: bytes = b"", minorversion: int = 1) -> bytes:
    p = xdrlib3.Packer()
    p.pack_string(tag)
    p.pack_uint(minorversion)
    ops = list(ops)
    p.pack_uint(len(ops))
    head = p.get_buffer()
    return head + b"".join(int(o.op).to_bytes(4, "big") + o.args for o in ops)


def decode_compound(body: bytes) -> CompoundRes:
    u = unpacker(body)
    with xdr_guard("COMPOUND4 reply"):
        status, tag = Nfs4Status(u.unpack_uint()), u.unpack_string()
        results = []
        for _ in range(u.unpack_uint()):
            code = u.unpack_uint()
            if code not in _KNOWN_OPS:
                raise XdrError(f"reply carries operation {code}, which this client cannot decode")
            op, st = Op(code), Nfs4Status(u.unpack_uint())
            decoder = _RESULT_DECODERS[op]
            value = decoder(u) if st == Nfs4Status.NFS4_OK and decoder else None
            results.append(OpResult(op, st, value))
        u.done()
    res = CompoundRes(status, tag, results)
    if results and results[0].op == Op.SEQUENCE:
        first = res.results.pop(0)
        res.sequence, res.sequence_status = first.value, first.status
    return res


# --- client ----------------------------------------------------------------------------------

class SessionError(RpcError):
    """EXCHANGE_ID, CREATE_SESSION or RECLAIM_COMPLETE failed: no usable session."""

    def __init__(self, op: Op, status: Nfs4Status) -> None:
        super().__init__(f"{op.name} failed: {status.name}")
        self.op, self.status = op, status


_LOST_SESSION = {Nfs4Status.NFS4ERR_BADSESSION, Nfs4Status.NFS4ERR_DEADSESSION,
                 Nfs4Status.NFS4ERR_STALE_CLIENTID}


class Nfs4Client:
    """NFSv4.1 client with one session of one slot. Not thread-safe."""

    def __init__(self, host: str = "127.0.0.1", port: int = 2049, auth: Auth | None = None,
                 timeout: float = 10.0, privileged: bool | None = None,
                 recover: bool = True, owner: bytes | None = None) -> None:
        self.rpc = RpcClient(host, port, PROG_NFS, 4, auth, timeout, privileged)
        self.recover = recover
        self.owner = owner or f"nfsconf-{os.getpid()}-{os.urandom(4).hex()}".encode()
        self.verifier = os.urandom(8)
        self.clientid: int | None = None
        self.sessionid: bytes | None = None
        self.seqid = 0
        self.max_ops = 0
        self.sessions_established = 0

    def __enter__(self) -> Nfs4Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def null(self, timeout: float | None = None) -> None:
        self.rpc.null(timeout)

    def compound_raw(self, ops: Iterable[OpArgs], tag: bytes = b"",
                     minorversion: int = 1) -> CompoundRes:
        """One COMPOUND exactly as given: no SEQUENCE, no recovery."""
        return decode_compound(self.rpc.call(_COMPOUND, encode_compound(ops, tag, minorversion)))

    def establish(self) -> None:
        """New client ID and session (also after a server restart), then RECLAIM_COMPLETE."""
        self.sessionid = None
        res = self.compound_raw([exchange_id(self.owner, self.verifier)])
        if not res.ok:
            raise SessionError(Op.EXCHANGE_ID, res.status)
        eid: ExchangeIdRes = res.results[0].value
        res = self.compound_raw([create_session(eid.clientid, eid.sequenceid)])
        if not res.ok:
            raise SessionError(Op.CREATE_SESSION, res.status)
        cs: CreateSessionRes = res.results[0].value
        self.clientid, self.sessionid, self.seqid = eid.clientid, cs.sessionid, 1
        self.max_ops = cs.max_ops
        self.sessions_established += 1
        done = self._sequenced([reclaim_complete()], b"")
        if not done.ok and done.status != Nfs4Status.NFS4ERR_COMPLETE_ALREADY:
            raise SessionError(Op.RECLAIM_COMPLETE, done.status)

    def compound(self, ops: Iterable[OpArgs], tag: bytes = b"") -> CompoundRes:
        """SEQUENCE + ops; recovers a lost connection or session once if ``recover``."""
        ops = list(ops)
        if self.sessionid is None:
            self.establish()
        try:
            res = self._sequenced(ops, tag)
        except RpcTransportError:
            if not self.recover:
                raise
            # Same session first: a dropped connection alone does not end a session.
            res = self._sequenced(ops, tag)
        if self.recover and res.sequence_status in _LOST_SESSION:
            self.establish()
            res = self._sequenced(ops, tag)
        return res

    def _sequenced(self, ops: list[OpArgs], tag: bytes) -> CompoundRes:
        assert self.sessionid is not None
        res = self.compound_raw([sequence(self.sessionid, self.seqid), *ops], tag)
        if res.sequence_status == Nfs4Status.NFS4_OK:
            self.seqid = (self.seqid + 1) & 0xFFFFFFFF
        return res

    def close(self) -> None:
        """DESTROY_SESSION and DESTROY_CLIENTID when connected (best effort), then close."""
        try:
            if self.sessionid is not None and self.rpc.connected:
                self.compound_raw([destroy_session(self.sessionid)])
                if self.clientid is not None:
                    self.compound_raw([destroy_clientid(self.clientid)])
        except RpcError:
            pass  # the server may be gone already; nothing left to clean up there
        finally:
            self.sessionid = self.clientid = None
            self.rpc.close()

    # Conveniences for the common lookups of the scenarios.

    def lookup_path(self, path: str, *attrs: Attr) -> CompoundRes:
        """PUTROOTFH, LOOKUP each component, GETFH, GETATTR (type, size, fileid default)."""
        parts = [lookup(c) for c in path.split("/") if c]
        return self.compound([putrootfh(), *parts, getfh(), getattr(*attrs)])

    def getattr_fh(self, fh: bytes, *attrs: Attr) -> CompoundRes:
        return self.compound([putfh(fh), getattr(*attrs)])

    def read_fh(self, fh: bytes, offset: int = 0, count: int = 65536) -> CompoundRes:
        return self.compound([putfh(fh), read(offset, count)])
