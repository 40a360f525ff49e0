"""What every transport hands to the scenarios: handles, decoded objects, identities."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Protocol

# Every directory the suite creates holds this file; its content names the directory.
MARKER_NAME = ".nfsconf-marker"
NFS_FH = 0  # Handle.fh_type of an NFS file handle: its bytes carry their own types


@dataclass(frozen=True)
class Handle:
    """A handle as the transport carries it: exportfs fid type + bytes, or an NFS fh."""

    fh_type: int
    data: bytes
    mount_id: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"type": f"0x{self.fh_type:x}", "len": len(self.data), "hex": self.data.hex()}


@dataclass(frozen=True)
class Identity:
    """What an object is: the inode the server reports and the marker written at setup."""

    st_ino: int
    st_dev: int
    is_dir: bool
    marker: str | None


@dataclass
class Decoded:
    """The result of presenting a handle: an identity, or an error name (ESTALE, ...)."""

    identity: Identity | None = None
    path: str | None = None
    error: str | None = None
    errno: int | None = None

    @property
    def opened(self) -> bool:
        return self.identity is not None


@dataclass
class Obj:
    """An object the suite created and knows: where it is and what it must decode to."""

    rel: str
    identity: Identity
    handle: Handle | None = None


# What an NFS status means in the terms the scenarios speak (local errno names).
EQUIVALENT = {"NFS3ERR_STALE": "ESTALE", "NFS4ERR_STALE": "ESTALE", "NFS4ERR_FHEXPIRED": "ESTALE",
              "NFS3ERR_NOENT": "ENOENT", "NFS4ERR_NOENT": "ENOENT",
              "NFS3ERR_BADHANDLE": "EBADHANDLE", "NFS4ERR_BADHANDLE": "EBADHANDLE"}


def as_errno_name(outcome: str) -> str:
    return EQUIVALENT.get(outcome, outcome)


UNVERIFIED = "UNVERIFIED"  # opened the right inode, but its marker could not be read


def verdict_of(expected: Identity, got: Decoded) -> str:
    """'same', 'other' or the error name. 'other' is the worst outcome there is: the handle
    opened an object it did not name — shown by another inode or another marker. An object
    with the expected inode whose marker cannot be read is UNVERIFIED (an error), never
    'other': the suite cannot tell, so it does not accuse."""
    if not got.opened:
        return got.error or "error"
    ident = got.identity
    assert ident is not None
    inode = (ident.st_ino, ident.st_dev, ident.is_dir) == \
        (expected.st_ino, expected.st_dev, expected.is_dir)
    if inode and ident.marker is None and expected.marker is not None:
        return UNVERIFIED
    return "same" if inode and ident.marker == expected.marker else "other"


def describe(expected: Identity, got: Decoded) -> dict[str, Any]:
    """Evidence for one decode: what was expected, what came back."""
    return {
        "expected": asdict(expected),
        "got": asdict(got.identity) if got.identity else None,
        "error": got.error,
        "path": got.path,
        "outcome": verdict_of(expected, got),
    }


class Transport(Protocol):
    name: str
    # what scenarios ask of a transport, instead of testing its name
    nfs: bool  # handles travel over the NFS wire
    knfsd: bool  # ... made by knfsd (a knfsd_fh around the kernel's fid)
    subtree_check: bool  # ... exported with subtree_check (file fids carry the parent)
    fh_size: int  # the most bytes one of its handles holds (NFSv3: 64; locally MAX_HANDLE_SZ)

    def open(self) -> None: ...

    def close(self) -> None: ...

    def encode(self, path: Any, *, connectable: bool = False) -> Handle: ...

    def decode(self, handle: Handle) -> Decoded: ...

    def settle(self, *, purge: bool = False) -> None:
        """Wait until whatever serves the handles has closed what it let go of; with PURGE,
        make it let go of every file it keeps open only as a cache (before drop_caches)."""
        ...
