"""What a scenario saw, for the record: every encode (with the handle's decoded fields) and
every decode (expected and found identity), notes, the first errno, and whether a handle
opened another object."""

from __future__ import annotations

from typing import Any

from nfsconf.transports.base import NFS_FH, Decoded, Handle, Obj, describe, verdict_of


def handle_fields(handle: Handle) -> dict[str, Any]:
    """The handle as the report shows it: raw bytes and, when a codec knows the type, its
    named fields. An NFS handle knfsd made shows the fileid type inside it."""
    from nfsconf.handles import decode_fid, decode_nfs_fh

    out = handle.to_dict()
    try:
        if handle.fh_type == NFS_FH:
            fh = decode_nfs_fh(handle.data)
            out.update(type=f"0x{fh.fileid_type:x}", nfs="knfsd", fields=fh.to_dict())
        else:
            out["fields"] = decode_fid(handle.fh_type, handle.data).to_dict()
    except ValueError as e:
        if handle.fh_type == NFS_FH:
            out["nfs"] = "opaque"  # Ganesha's handles are its own
        else:
            out["fields_error"] = str(e)
    return out


class Evidence:
    """What a scenario saw, for the record: decodes, handles, notes."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}
        self.errno: str | None = None
        self.handle: dict[str, Any] | None = None
        self.wrong_object = False
        # cells a scenario adds beside its own (the codes of an oracle it ran: pynfs)
        self.extra: list[dict[str, Any]] = []

    def note(self, key: str, value: Any) -> None:
        self.data[key] = value

    def encoded(self, label: str, handle: Handle) -> None:
        fields = handle_fields(handle)
        self.data.setdefault("handles", {})[label] = fields
        if self.handle is None:
            self.handle = fields

    def decoded(self, label: str, obj: Obj, got: Decoded) -> str:
        """Record one decode and return its outcome: 'same', 'other' or an error name."""
        self.data.setdefault("decodes", {})[label] = describe(obj.identity, got)
        if got.error and self.errno is None:
            self.errno = got.error
        return verdict_of(obj.identity, got)
