"""nfsconf's own raw NFS client (ONC-RPC, MOUNT3, NFSv3, NFSv4.1) and a Ganesha launcher."""

from .mount3 import MntResult, Mount3Client
from .nfs3 import Nfs3Client
from .nfs4 import Attr, CompoundRes, Nfs4Client, Op, SessionError
from .rpc import AuthNone, AuthSys, RpcError, RpcRejected, RpcTransportError, XdrError
from .status import FileType, MountStatus, Nfs3Status, Nfs4Status

__all__ = [
    "Attr", "AuthNone", "AuthSys", "CompoundRes", "FileType", "MntResult", "Mount3Client",
    "MountStatus", "Nfs3Client", "Nfs3Status", "Nfs4Client", "Nfs4Status", "Op", "RpcError",
    "RpcRejected", "RpcTransportError", "SessionError", "XdrError",
]
