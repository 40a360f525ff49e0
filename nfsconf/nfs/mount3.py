"""MOUNT protocol v3 (RFC 1813 appendix I): MNT, UMNT, EXPORT."""

from __future__ import annotations

from dataclasses import dataclass, field

import xdrlib3

from .rpc import PROG_MOUNT, Auth, RpcClient, getport, unpacker, xdr_guard
from .status import MountStatus

MNTPATHLEN = 1024
FHSIZE3 = 64
_MNT, _UMNT, _EXPORT = 1, 3, 5


@dataclass
class MntResult:
    status: MountStatus
    fh: bytes = b""
    auth_flavors: list[int] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == MountStatus.MNT3_OK


@dataclass
class ExportEntry:
    path: str
    groups: list[str]


def _path_arg(path: str) -> bytes:
    raw = path.encode()
    if len(raw) > MNTPATHLEN:
        raise ValueError(f"mount path longer than {MNTPATHLEN} bytes")
    p = xdrlib3.Packer()
    p.pack_string(raw)
    return p.get_buffer()


def decode_mnt(body: bytes) -> MntResult:
    u = unpacker(body)
    with xdr_guard("MNT3 reply"):
        res = MntResult(MountStatus(u.unpack_uint()))
        if res.ok:
            res.fh, res.auth_flavors = u.unpack_opaque(), u.unpack_array(u.unpack_uint)
        u.done()
        return res


def decode_export(body: bytes) -> list[ExportEntry]:
    u = unpacker(body)
    with xdr_guard("EXPORT3 reply"):
        def entry() -> ExportEntry:
            path = u.unpack_string().decode(errors="replace")
            groups = u.unpack_list(lambda: u.unpack_string().decode(errors="replace"))
            return ExportEntry(path, groups)
        exports = u.unpack_list(entry)
        u.done()
        return exports


class Mount3Client:
    """MOUNT v3 client. Port 0 asks the portmapper on ``host`` (knfsd's mountd moves)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, auth: Auth | None = None,
                 timeout: float = 10.0, privileged: bool | None = None) -> None:
        if port == 0:
            port = getport(host, PROG_MOUNT, 3, timeout)
        self.rpc = RpcClient(host, port, PROG_MOUNT, 3, auth, timeout, privileged)

    def __enter__(self) -> Mount3Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.rpc.close()

    def null(self) -> None:
        self.rpc.null()

    def mnt(self, path: str) -> MntResult:
        return decode_mnt(self.rpc.call(_MNT, _path_arg(path)))

    def umnt(self, path: str) -> None:
        self.rpc.call(_UMNT, _path_arg(path))

    def export(self) -> list[ExportEntry]:
        return decode_export(self.rpc.call(_EXPORT))
