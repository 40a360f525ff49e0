"""Forged and mutated handles: bit flips, truncation, extension, wrong types, nodeid 0,
FUSE_ROOT_ID, random bytes, forgotten nodeids, handles of another filesystem. Seeded
(--fuzz-seed) and bounded (--fuzz-budget); the seed and every odd outcome are in the evidence.
"""

import os
from collections import Counter

from nfsconf.fuzz import Mutation, mutations
from nfsconf.handles import FILEID_INO64_GEN
from nfsconf.lab import SEED_DIRS, SEED_FILES
from nfsconf.scenario import scenario
from nfsconf.transports.base import Handle
from nfsconf.transports.local import name_to_handle


def _classify(cell, known, originals, m):
    """'error:ERRNO', 'original' (opened what the mutated handle was made from), 'named'
    (opened a live object whose own handle is exactly these bytes), or 'wrong'."""
    got = cell.transport.decode(m.handle)
    if not got.opened:
        return f"error:{got.error}", None
    rel = cell.opened_rel(got.identity, list(known.values()))
    if rel is None and got.identity.marker is None:
        return "unverified", None  # the right kind of answer cannot be told: no accusation
    if m.source >= 0 and rel == originals[m.source][0]:
        return "original", rel
    # a handle the server once gave for a file now gone names nothing alive: whatever it
    # opens is another object, even when its bytes have become that object's own handle
    if rel is not None and m.kind != "forgotten":
        own = name_to_handle(cell.path(rel))
        if (own.fh_type, own.data) == (m.handle.fh_type & 0xFFFF, m.handle.data):
            return "named", rel
    return "wrong", rel or f"unknown object ino {got.identity.st_ino}"


def _fuzz(cell, options):
    seed, budget = options.fuzz_seed, options.fuzz_budget
    rels = ["", *SEED_DIRS, *SEED_FILES]
    originals = [(rel, name_to_handle(cell.path(rel))) for rel in rels]
    cell.encoded(rels[-1], originals[-1][1])
    known = {cell.markers[rel]: rel for rel in rels}
    cases = list(mutations(seed, [h for _, h in originals], budget))
    if cell.profile.writable:  # handles of files that are gone, nodeids the server forgot
        cell.path("gone").mkdir()
        for i in range(8):
            obj = cell.make_file(f"gone/f{i}")
            cases.append(Mutation("forgotten", -1, cell.encode_unrecorded(obj), obj.rel))
            os.unlink(cell.path(obj.rel))
    other = name_to_handle(cell.root)  # the same bytes' meaning on another filesystem
    cases.append(Mutation("other-mount", -1, Handle(other.fh_type, other.data), str(cell.root)))
    cases.append(Mutation("other-mount", -1, Handle(FILEID_INO64_GEN,
                                                    other.data[:12].ljust(12, b"\0")),
                          f"{cell.root} as 0x81"))
    outcomes: Counter[str] = Counter()
    by_kind: dict[str, Counter[str]] = {}
    odd = []
    # warm: every original inode cached, so a guessed nodeid finds a live inode at once;
    # cold: the first decode of each nodeid asks the server (LOOKUP(nodeid, ".")); a later
    # one of the same nodeid may find the inode that decode cached, which changes nothing:
    # the server's answer depends on the nodeid alone, the kernel checks the generation
    # itself either way
    for phase in ("warm", "cold"):
        if phase == "cold":
            cell.drop_caches()
        for m in cases:
            outcome, rel = _classify(cell, known, originals, m)
            outcomes[outcome] += 1
            by_kind.setdefault(f"{m.kind}/{phase}", Counter())[outcome] += 1
            # keep examples of each odd outcome of each kind, counted in full by by_kind
            if outcome in ("wrong", "named") and sum(
                    o["outcome"] == outcome and o["kind"] == m.kind for o in odd) < 5:
                odd.append({**m.to_dict(), "phase": phase, "outcome": outcome, "opened": rel})
    cell.note("seed", seed)
    cell.note("handles_tried", len(cases))
    cell.note("outcomes", dict(outcomes))
    cell.note("by_kind", {k: dict(v) for k, v in by_kind.items()})
    cell.note("odd", odd)
    return outcomes, odd, by_kind


@scenario("FUZZ", "MUST", where="local", certify=1)
def test_fuzz_never_wrong_object(cell, options):
    """FUZZ: a mutated or forged handle gives an error, opens the object it was made from,
    or opens the live object whose handle is exactly those bytes; never anything else."""
    outcomes, odd, _ = _fuzz(cell, options)
    if outcomes["wrong"]:
        cell.wrong_object()
        first = next(o for o in odd if o["outcome"] == "wrong")
        raise AssertionError(f"WRONG OBJECT: {outcomes['wrong']} of {sum(outcomes.values())} "
                             f"forged handles opened another object, e.g. {first['kind']} "
                             f"{first['detail']} opened {first['opened']}")


@scenario("FUZZ-GUESS", "SHOULD", where="local", certify=1, advisory=True)
def test_fuzz_not_guessable(cell, options):
    """FUZZ-GUESS: a bit flip or random bytes do not land on another live object (the
    generation number is what makes handles hard to guess). FUSE_ROOT_ID with generation 0
    naming the root is expected and not counted."""
    _, odd, by_kind = _fuzz(cell, options)
    guessed = sum(c["named"] for k, c in by_kind.items() if not k.startswith("rootid/"))
    examples = [o for o in odd if o["outcome"] == "named" and o["kind"] != "rootid"]
    assert not guessed, (f"{guessed} forged handles opened other live objects, e.g. "
                         f"{examples[0]['kind']} {examples[0]['detail']} -> "
                         f"{examples[0]['opened']}")
