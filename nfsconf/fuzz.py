"""Forged and mutated handles, seeded and reproducible: the same seed and the same input
handles give the same mutations in the same order."""

from __future__ import annotations

import random
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from nfsconf.handles import FILEID_INO64_GEN
from nfsconf.transports.base import Handle

FUSE_ROOT_ID = 1
# fid types a FUSE mount may be handed: its own, its neighbours', LOOKUP_HANDLE's, nonsense
TYPES = (0, 1, 2, 0x81, 0x82, 0x91, 0x92, 0xFF, 0x10081, 0x20081, 0x10082, 0x30081)
KINDS = ("bitflip", "truncate", "extend", "wrongtype", "nodeid0", "rootid", "random")


@dataclass(frozen=True)
class Mutation:
    kind: str
    source: int  # index of the original handle it was made from
    handle: Handle
    detail: str

    def to_dict(self) -> dict[str, object]:
        return {"kind": self.kind, "source": self.source, "detail": self.detail,
                **self.handle.to_dict()}


def _with_nodeid(h: Handle, nodeid: int, generation: int | None = None) -> Handle:
    """A 0x81 body with NODEID (and GENERATION): hi, lo, gen, u32 each in host order."""
    gen = generation if generation is not None else (
        struct.unpack_from("<I", h.data, 8)[0] if len(h.data) >= 12 else 0)
    data = struct.pack("<III", nodeid >> 32, nodeid & 0xFFFFFFFF, gen)
    return Handle(FILEID_INO64_GEN, data + h.data[12:])


def mutate(rng: random.Random, kind: str, h: Handle) -> tuple[Handle, str]:
    data = bytearray(h.data)
    if kind == "bitflip" and data:
        bit = rng.randrange(len(data) * 8)
        data[bit // 8] ^= 1 << (bit % 8)
        return Handle(h.fh_type, bytes(data)), f"bit {bit}"
    if kind == "truncate" and data:
        n = rng.randrange(len(data))
        return Handle(h.fh_type, bytes(data[:n])), f"to {n} bytes"
    if kind == "extend":
        extra = rng.randbytes(rng.randint(1, 16))
        return Handle(h.fh_type, bytes(data) + extra), f"+{len(extra)} bytes"
    if kind == "wrongtype":
        t = rng.choice([t for t in TYPES if t != h.fh_type])
        return Handle(t, bytes(data)), f"type 0x{t:x}"
    if kind == "nodeid0":
        return _with_nodeid(h, 0), "nodeid 0"
    if kind == "rootid":
        return _with_nodeid(h, FUSE_ROOT_ID, 0), "nodeid 1 (FUSE_ROOT_ID), generation 0"
    n = rng.choice((0, 4, 8, 12, 12, 12, 24, rng.randint(1, 128)))
    return Handle(FILEID_INO64_GEN, rng.randbytes(n)), f"{n} random bytes"


def mutations(seed: int, originals: list[Handle], budget: int) -> Iterator[Mutation]:
    """BUDGET mutations of ORIGINALS, every kind in turn so a small budget covers them all."""
    rng = random.Random(seed)
    for i in range(budget):
        kind = KINDS[i % len(KINDS)]
        source = rng.randrange(len(originals))
        handle, detail = mutate(rng, kind, originals[source])
        yield Mutation(kind, source, handle, detail)
