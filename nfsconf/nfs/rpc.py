"""ONC-RPC v2 client over TCP (RFC 5531, formerly RFC 1057) with record marking.

Only what nfsconf needs: CALL/REPLY messages, AUTH_NONE and AUTH_SYS credentials, record
marking with multi-fragment records, a per-call timeout, and a reconnect on the next call
after any transport failure. Transport failures raise ``RpcTransportError``; a server that
refuses the call at RPC level (wrong program, bad credentials) raises ``RpcRejected``;
an undecodable reply raises ``XdrError``. All three derive from ``RpcError``.
"""

from __future__ import annotations

import errno
import os
import random
import socket
import struct
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import xdrlib3

PROG_PORTMAP = 100000
PROG_NFS = 100003
PROG_MOUNT = 100005

_CALL, _REPLY = 0, 1
_MSG_ACCEPTED, _MSG_DENIED = 0, 1
_LAST_FRAGMENT = 0x80000000
# RFC 5531 caps credential bodies at 400 bytes.
_MAX_AUTH_BODY = 400

_ACCEPT_ERRORS = {1: "PROG_UNAVAIL", 2: "PROG_MISMATCH", 3: "PROC_UNAVAIL",
                  4: "GARBAGE_ARGS", 5: "SYSTEM_ERR"}
_AUTH_ERRORS = {1: "AUTH_BADCRED", 2: "AUTH_REJECTEDCRED", 3: "AUTH_BADVERF",
                4: "AUTH_REJECTEDVERF", 5: "AUTH_TOOWEAK", 6: "AUTH_INVALIDRESP",
                7: "AUTH_FAILED"}


class RpcError(Exception):
    """Base of every error this package raises."""


class RpcTransportError(RpcError):
    """The connection could not be made, timed out, was reset or closed mid-call."""


class RpcRejected(RpcError):
    """The server answered, but refused the call at RPC level (not an NFS status)."""


class XdrError(RpcError):
    """A message could not be encoded or decoded (truncated, malformed or out of range)."""


@contextmanager
def xdr_guard(what: str) -> Iterator[None]:
    """Turn the assorted errors of xdrlib3/struct into one XdrError naming the message."""
    try:
        yield
    except (EOFError, xdrlib3.Error, struct.error, ValueError, OverflowError) as e:
        raise XdrError(f"bad XDR in {what}: {e!r}") from e


def unpacker(data: bytes) -> xdrlib3.Unpacker:
    return xdrlib3.Unpacker(data)


@dataclass(frozen=True)
class AuthNone:
    flavor: int = field(default=0, init=False)

    def body(self) -> bytes:
        return b""


@dataclass(frozen=True)
class AuthSys:
    """AUTH_SYS (AUTH_UNIX) credential; root by default because tests run as root."""

    uid: int = 0
    gid: int = 0
    gids: tuple[int, ...] = ()
    machinename: str = "nfsconf"
    stamp: int = 0
    flavor: int = field(default=1, init=False)

    def body(self) -> bytes:
        p = xdrlib3.Packer()
        p.pack_uint(self.stamp)
        p.pack_string(self.machinename.encode())
        p.pack_uint(self.uid)
        p.pack_uint(self.gid)
        p.pack_array(list(self.gids), p.pack_uint)
        return p.get_buffer()


Auth = AuthNone | AuthSys


def pack_opaque_auth(p: xdrlib3.Packer, flavor: int, body: bytes) -> None:
    if len(body) > _MAX_AUTH_BODY:
        raise XdrError(f"auth body of {len(body)} bytes exceeds {_MAX_AUTH_BODY}")
    p.pack_uint(flavor)
    p.pack_opaque(body)


# --- record marking (RFC 5531 section 11) ---------------------------------------------------

def encode_record(payload: bytes, max_fragment: int = 1 << 30) -> bytes:
    """Split one message into fragments of at most max_fragment bytes, last one flagged."""
    if not 1 <= max_fragment < _LAST_FRAGMENT:
        raise ValueError(f"max_fragment out of range: {max_fragment}")
    starts = range(0, len(payload), max_fragment) or range(1)  # an empty message: one mark
    out = bytearray()
    for start in starts:
        chunk = payload[start:start + max_fragment]
        last = _LAST_FRAGMENT if start == starts[-1] else 0
        out += struct.pack(">I", last | len(chunk)) + chunk
    return bytes(out)


class RecordDecoder:
    """Incremental record-marking decoder: feed stream bytes, get whole records back."""

    def __init__(self, max_record: int = 64 << 20) -> None:
        self._buf = bytearray()
        self._record = bytearray()
        self.max_record = max_record

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        records: list[bytes] = []
        while len(self._buf) >= 4:
            (mark,) = struct.unpack_from(">I", self._buf)
            size = mark & ~_LAST_FRAGMENT
            if len(self._record) + size > self.max_record:
                raise XdrError(f"record larger than {self.max_record} bytes")
            if len(self._buf) < 4 + size:
                break
            self._record += self._buf[4:4 + size]
            del self._buf[:4 + size]
            if mark & _LAST_FRAGMENT:
                records.append(bytes(self._record))
                self._record.clear()
        return records

    @property
    def pending(self) -> int:
        """Bytes held that do not yet form a whole record."""
        return len(self._buf) + len(self._record)


# --- messages --------------------------------------------------------------------------------

def encode_call(xid: int, prog: int, vers: int, proc: int, auth: Auth, args: bytes) -> bytes:
    p = xdrlib3.Packer()
    for word in (xid, _CALL, 2, prog, vers, proc):
        p.pack_uint(word)
    pack_opaque_auth(p, auth.flavor, auth.body())
    pack_opaque_auth(p, 0, b"")  # verifier: AUTH_NONE for both flavours
    return p.get_buffer() + args


def decode_reply(msg: bytes) -> tuple[int, bytes]:
    """Return (xid, procedure result bytes) of an accepted, successful reply.

    Raises RpcRejected for MSG_DENIED and for accept_stat other than SUCCESS.
    """
    u = unpacker(msg)
    with xdr_guard("RPC reply header"):
        xid, mtype = u.unpack_uint(), u.unpack_uint()
        if mtype != _REPLY:
            raise XdrError(f"message type {mtype} is not REPLY")
        stat = u.unpack_uint()
        if stat == _MSG_DENIED:
            reject = u.unpack_uint()
            if reject == 0:
                low, high = u.unpack_uint(), u.unpack_uint()
                raise RpcRejected(f"RPC_MISMATCH: server speaks RPC {low}..{high}")
            why = u.unpack_uint()
            raise RpcRejected(f"AUTH_ERROR: {_AUTH_ERRORS.get(why, why)}")
        if stat != _MSG_ACCEPTED:
            raise XdrError(f"reply_stat {stat} unknown")
        u.unpack_uint()  # verifier flavour
        u.unpack_opaque()
        accept = u.unpack_uint()
        if accept == 2:
            low, high = u.unpack_uint(), u.unpack_uint()
            raise RpcRejected(f"PROG_MISMATCH: server has versions {low}..{high}")
        if accept != 0:
            raise RpcRejected(_ACCEPT_ERRORS.get(accept, f"accept_stat {accept}"))
        return xid, msg[u.get_position():]


# --- client ----------------------------------------------------------------------------------

def _open_socket(host: str, port: int, timeout: float, privileged: bool) -> socket.socket:
    """Connect, from a port below 1024 if privileged (knfsd's default `secure` option)."""
    local_ports = random.sample(range(600, 1024), 64) if privileged else [0]
    for local in local_ports:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.settimeout(timeout)
            if privileged:
                sock.bind(("", local))
            sock.connect((host, port))
            return sock
        except OSError as e:
            sock.close()
            # Port taken, or an old connection from it to this server sits in TIME_WAIT.
            if privileged and e.errno in (errno.EADDRINUSE, errno.EADDRNOTAVAIL):
                continue
            raise RpcTransportError(f"connect to {host}:{port} failed: {e}") from e
    raise RpcTransportError(f"connect to {host}:{port}: no free reserved source port")


class RpcClient:
    """One TCP connection to one RPC program/version. Not thread-safe.

    After a transport error the socket is dropped and the next call connects again; with
    ``retries`` > 0 a call is re-sent on a new connection that many times (only sensible
    for idempotent procedures, so it is off by default).
    """

    def __init__(self, host: str, port: int, prog: int, vers: int, auth: Auth | None = None,
                 timeout: float = 10.0, privileged: bool | None = None, retries: int = 0,
                 max_fragment: int = 1 << 30) -> None:
        self.host, self.port, self.prog, self.vers = host, port, prog, vers
        self.auth: Auth = auth if auth is not None else AuthSys()
        self.timeout = timeout
        self.privileged = os.geteuid() == 0 if privileged is None else privileged
        self.retries = retries
        self.max_fragment = max_fragment
        self.connects = 0
        self.on_exchange: Callable[[int, bytes, bytes], None] | None = None
        self._sock: socket.socket | None = None
        self._decoder = RecordDecoder()
        self._xid = random.getrandbits(32)

    def __enter__(self) -> RpcClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def connected(self) -> bool:
        return self._sock is not None

    @property
    def local_port(self) -> int | None:
        return self._sock.getsockname()[1] if self._sock is not None else None

    def connect(self) -> None:
        self.close()
        self._sock = _open_socket(self.host, self.port, self.timeout, self.privileged)
        self._decoder = RecordDecoder()
        self.connects += 1

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def call(self, proc: int, args: bytes = b"", timeout: float | None = None) -> bytes:
        """Send one call and return the procedure's result bytes (after the RPC header)."""
        for attempt in range(self.retries + 1):
            try:
                return self._call_once(proc, args, timeout)
            except RpcTransportError:
                self.close()
                if attempt == self.retries:
                    raise
        raise AssertionError("unreachable")

    def null(self, timeout: float | None = None) -> None:
        self.call(0, b"", timeout)

    def _call_once(self, proc: int, args: bytes, timeout: float | None) -> bytes:
        if self._sock is None:
            self.connect()
        assert self._sock is not None
        self._xid = (self._xid + 1) & 0xFFFFFFFF
        xid = self._xid
        msg = encode_call(xid, self.prog, self.vers, proc, self.auth, args)
        limit = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        try:
            self._sock.settimeout(limit)
            self._sock.sendall(encode_record(msg, self.max_fragment))
            while True:
                for record in self._receive(deadline):
                    if _xid_of(record) != xid:
                        continue  # not ours: e.g. a reply to a call abandoned on this stream
                    if self.on_exchange is not None:
                        self.on_exchange(proc, msg, record)
                    return decode_reply(record)[1]
        except TimeoutError as e:
            self.close()
            raise RpcTransportError(f"timeout after {limit:g}s (proc {proc})") from e
        except OSError as e:
            self.close()
            raise RpcTransportError(f"{self.host}:{self.port}: {e}") from e
        except XdrError:
            self.close()  # broken framing: the stream cannot be resynchronised
            raise

    def _receive(self, deadline: float) -> list[bytes]:
        assert self._sock is not None
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        self._sock.settimeout(remaining)
        data = self._sock.recv(1 << 20)
        if not data:
            self.close()
            raise RpcTransportError(f"{self.host}:{self.port} closed the connection")
        return self._decoder.feed(data)


def _xid_of(record: bytes) -> int | None:
    return struct.unpack_from(">I", record)[0] if len(record) >= 4 else None


def getport(host: str, prog: int, vers: int, timeout: float = 5.0) -> int:
    """Ask the portmapper (v2 GETPORT over TCP) where prog/vers listens on TCP."""
    p = xdrlib3.Packer()
    for word in (prog, vers, 6, 0):  # 6 = IPPROTO_TCP
        p.pack_uint(word)
    with RpcClient(host, 111, PROG_PORTMAP, 2, AuthNone(), timeout, privileged=False) as c:
        body = c.call(3, p.get_buffer())
    with xdr_guard("PMAP GETPORT reply"):
        port = unpacker(body).unpack_uint()
    if port == 0:
        raise RpcRejected(f"program {prog} v{vers} is not registered with {host}:111")
    return port
