"""NFSv3 client (RFC 1813): NULL, GETATTR, LOOKUP, READ, READDIRPLUS, CREATE, REMOVE.

Handles are raw bytes in and out and are sent as given, even when longer than NFS3_FHSIZE,
so scenarios can present malformed handles on purpose. A non-OK status is returned in the
result's ``status``; only transport and RPC-level failures raise (see rpc.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import xdrlib3

from .rpc import PROG_NFS, Auth, RpcClient, getport, unpacker, xdr_guard
from .status import FileType, Nfs3Status

NFS3_FHSIZE = 64
_GETATTR, _LOOKUP, _READ, _CREATE, _REMOVE, _READDIRPLUS = 1, 3, 6, 8, 12, 17
UNCHECKED, GUARDED, EXCLUSIVE = 0, 1, 2

Name = str | bytes


def _name(name: Name) -> bytes:
    # surrogateescape keeps non-UTF-8 names lossless in both directions.
    return name if isinstance(name, bytes) else name.encode("utf-8", "surrogateescape")


@dataclass
class Fattr3:
    type: FileType
    mode: int
    nlink: int
    uid: int
    gid: int
    size: int
    used: int
    rdev: tuple[int, int]
    fsid: int
    fileid: int
    atime: tuple[int, int]
    mtime: tuple[int, int]
    ctime: tuple[int, int]


@dataclass
class Result3:
    status: Nfs3Status

    @property
    def ok(self) -> bool:
        return self.status == Nfs3Status.NFS3_OK


@dataclass
class GetattrRes(Result3):
    attr: Fattr3 | None = None


@dataclass
class LookupRes(Result3):
    fh: bytes = b""
    attr: Fattr3 | None = None
    dir_attr: Fattr3 | None = None


@dataclass
class ReadRes(Result3):
    data: bytes = b""
    eof: bool = False
    attr: Fattr3 | None = None


@dataclass
class DirEntry:
    fileid: int
    name: str
    cookie: int
    attr: Fattr3 | None
    fh: bytes | None


@dataclass
class ReaddirplusRes(Result3):
    entries: list[DirEntry] = field(default_factory=list)
    eof: bool = False
    cookieverf: bytes = bytes(8)
    dir_attr: Fattr3 | None = None


@dataclass
class CreateRes(Result3):
    fh: bytes | None = None
    attr: Fattr3 | None = None


@dataclass
class RemoveRes(Result3):
    pass


# --- decoding --------------------------------------------------------------------------------

def _time(u: xdrlib3.Unpacker) -> tuple[int, int]:
    return u.unpack_uint(), u.unpack_uint()


def _fattr3(u: xdrlib3.Unpacker) -> Fattr3:
    ftype = FileType(u.unpack_uint())
    mode, nlink, uid, gid = (u.unpack_uint() for _ in range(4))
    size, used = u.unpack_uhyper(), u.unpack_uhyper()
    rdev = (u.unpack_uint(), u.unpack_uint())
    fsid, fileid = u.unpack_uhyper(), u.unpack_uhyper()
    return Fattr3(ftype, mode, nlink, uid, gid, size, used, rdev, fsid, fileid,
                  _time(u), _time(u), _time(u))


def _post_op_attr(u: xdrlib3.Unpacker) -> Fattr3 | None:
    return _fattr3(u) if u.unpack_bool() else None


def _post_op_fh(u: xdrlib3.Unpacker) -> bytes | None:
    return u.unpack_opaque() if u.unpack_bool() else None


def _wcc_data(u: xdrlib3.Unpacker) -> Fattr3 | None:
    if u.unpack_bool():  # pre_op_attr: size, mtime, ctime (not kept)
        u.unpack_uhyper()
        _time(u)
        _time(u)
    return _post_op_attr(u)


def decode_getattr(body: bytes) -> GetattrRes:
    u = unpacker(body)
    with xdr_guard("GETATTR3 reply"):
        status = Nfs3Status(u.unpack_uint())
        res = GetattrRes(status, _fattr3(u) if status == 0 else None)
        u.done()
        return res


def decode_lookup(body: bytes) -> LookupRes:
    u = unpacker(body)
    with xdr_guard("LOOKUP3 reply"):
        status = Nfs3Status(u.unpack_uint())
        if status != 0:
            res = LookupRes(status, dir_attr=_post_op_attr(u))
        else:
            res = LookupRes(status, u.unpack_opaque(), _post_op_attr(u), _post_op_attr(u))
        u.done()
        return res


def decode_read(body: bytes) -> ReadRes:
    u = unpacker(body)
    with xdr_guard("READ3 reply"):
        status = Nfs3Status(u.unpack_uint())
        res = ReadRes(status, attr=_post_op_attr(u))
        if status == 0:
            u.unpack_uint()  # count, repeated in the opaque's length
            res.eof = u.unpack_bool()
            res.data = u.unpack_opaque()
        u.done()
        return res


def decode_readdirplus(body: bytes) -> ReaddirplusRes:
    u = unpacker(body)
    with xdr_guard("READDIRPLUS3 reply"):
        status = Nfs3Status(u.unpack_uint())
        dir_attr = _post_op_attr(u)
        if status != 0:
            u.done()
            return ReaddirplusRes(status, dir_attr=dir_attr)
        verf = u.unpack_fopaque(8)

        def entry() -> DirEntry:
            fileid = u.unpack_uhyper()
            name = u.unpack_string().decode("utf-8", "surrogateescape")
            return DirEntry(fileid, name, u.unpack_uhyper(), _post_op_attr(u), _post_op_fh(u))

        entries = u.unpack_list(entry)
        res = ReaddirplusRes(status, entries, u.unpack_bool(), verf, dir_attr)
        u.done()
        return res


def decode_create(body: bytes) -> CreateRes:
    u = unpacker(body)
    with xdr_guard("CREATE3 reply"):
        status = Nfs3Status(u.unpack_uint())
        res = CreateRes(status)
        if status == 0:
            res.fh, res.attr = _post_op_fh(u), _post_op_attr(u)
        _wcc_data(u)  # dir_wcc, present in both arms
        u.done()
        return res


def decode_remove(body: bytes) -> RemoveRes:
    u = unpacker(body)
    with xdr_guard("REMOVE3 reply"):
        res = RemoveRes(Nfs3Status(u.unpack_uint()))
        _wcc_data(u)
        u.done()
        return res


# --- client ----------------------------------------------------------------------------------

class Nfs3Client:
    """NFSv3 over TCP. Port 0 asks the portmapper on ``host``."""

    def __init__(self, host: str = "127.0.0.1", port: int = 2049, auth: Auth | None = None,
                 timeout: float = 10.0, privileged: bool | None = None,
                 retries: int = 0) -> None:
        if port == 0:
            port = getport(host, PROG_NFS, 3, timeout)
        self.rpc = RpcClient(host, port, PROG_NFS, 3, auth, timeout, privileged, retries)

    def __enter__(self) -> Nfs3Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.rpc.close()

    def null(self, timeout: float | None = None) -> None:
        self.rpc.null(timeout)

    def getattr(self, fh: bytes) -> GetattrRes:
        p = xdrlib3.Packer()
        p.pack_opaque(fh)
        return decode_getattr(self.rpc.call(_GETATTR, p.get_buffer()))

    def lookup(self, dir_fh: bytes, name: Name) -> LookupRes:
        return decode_lookup(self.rpc.call(_LOOKUP, _diropargs(dir_fh, name)))

    def read(self, fh: bytes, offset: int = 0, count: int = 65536) -> ReadRes:
        p = xdrlib3.Packer()
        p.pack_opaque(fh)
        p.pack_uhyper(offset)
        p.pack_uint(count)
        return decode_read(self.rpc.call(_READ, p.get_buffer()))

    def readdirplus(self, dir_fh: bytes, cookie: int = 0, cookieverf: bytes = bytes(8),
                    dircount: int = 8192, maxcount: int = 32768) -> ReaddirplusRes:
        p = xdrlib3.Packer()
        p.pack_opaque(dir_fh)
        p.pack_uhyper(cookie)
        p.pack_fopaque(8, cookieverf)
        p.pack_uint(dircount)
        p.pack_uint(maxcount)
        return decode_readdirplus(self.rpc.call(_READDIRPLUS, p.get_buffer()))

    def readdirplus_all(self, dir_fh: bytes) -> ReaddirplusRes:
        """Follow cookies to EOF; on a failing page return that status with what was read."""
        res = self.readdirplus(dir_fh)
        entries = list(res.entries)
        while res.ok and not res.eof and res.entries:
            res = self.readdirplus(dir_fh, res.entries[-1].cookie, res.cookieverf)
            entries += res.entries
        res.entries = entries
        return res

    def create(self, dir_fh: bytes, name: Name, mode: int = 0o644,
               how: int = UNCHECKED) -> CreateRes:
        p = xdrlib3.Packer()
        p.pack_opaque(dir_fh)
        p.pack_string(_name(name))
        p.pack_uint(how)
        if how == EXCLUSIVE:
            p.pack_fopaque(8, b"nfsconf!")
        else:  # sattr3: set mode only; uid, gid, size, atime, mtime left alone
            p.pack_bool(True)
            p.pack_uint(mode)
            for _ in range(5):
                p.pack_uint(0)
        return decode_create(self.rpc.call(_CREATE, p.get_buffer()))

    def remove(self, dir_fh: bytes, name: Name) -> RemoveRes:
        return decode_remove(self.rpc.call(_REMOVE, _diropargs(dir_fh, name)))

    def lookup_path(self, root_fh: bytes, path: str) -> LookupRes:
        """LOOKUP each component of a relative path; stops at the first failure."""
        res = LookupRes(Nfs3Status.NFS3_OK, root_fh)
        for part in (c for c in path.split("/") if c):
            res = self.lookup(res.fh, part)
            if not res.ok:
                break
        return res


def _diropargs(dir_fh: bytes, name: Name) -> bytes:
    p = xdrlib3.Packer()
    p.pack_opaque(dir_fh)
    p.pack_string(_name(name))
    return p.get_buffer()
