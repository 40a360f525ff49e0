"""The verdict of one cell, from what happened in it. Pure: no pytest, no I/O.

A cell is PASS, FAIL, ERROR, SKIP or XFAIL. What the scenario's own phases say comes last;
before it, in this order: a kernel that logged trouble (WARN, BUG, oops) fails the cell; a
handle that opened another object fails it whatever else happened; a time limit or an
exception inside the reference server makes it ERROR (the suite cannot vouch for what it
saw). Of the scenario's own exceptions, EOPNOTSUPP and ESTALE are answers of the system
under test (FAIL), as is an export refused with EOPNOTSUPP at set-up; any other is the
suite's (ERROR). The errno is the exception's, never read from its text. Decode outcomes
fall into three classes (the same object, an error, another object); the diff compares
classes, not errno names.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass

VERDICTS = ("PASS", "FAIL", "ERROR", "SKIP", "XFAIL")
BAD = ("FAIL", "ERROR")
OUTCOME_CLASSES = ("same", "error", "other")


@dataclass(frozen=True)
class Phase:
    """One pytest phase (setup, call, teardown) reduced to what the verdict needs."""

    outcome: str  # passed | failed | skipped
    message: str = ""  # first line of the failure, or the skip reason
    is_assert: bool = False  # the failure is an AssertionError: the scenario's own check
    xfail: str | None = None  # pytest.xfail reason, when the scenario called it
    errno: int | None = None  # the errno of the OSError that failed the phase


@dataclass(frozen=True)
class Verdict:
    verdict: str
    reason: str


@dataclass(frozen=True)
class CellFacts:
    """What else the suite saw while the cell ran."""

    kernel_trouble: tuple[str, ...] = ()  # kernel log lines with WARN/BUG/oops
    wrong_object: bool = False  # a decode opened an object other than the one encoded
    timeout: str | None = None  # the watchdog's message when the time limit fired
    server_errors: tuple[str, ...] = ()  # exceptions the reference server recorded


def verdict(setup: Phase | None, call: Phase | None, teardown: Phase | None,
            facts: CellFacts = CellFacts()) -> Verdict:
    own = _from_phases(setup, call, teardown)
    if facts.kernel_trouble:
        return Verdict("FAIL", f"kernel: {facts.kernel_trouble[0][:200]}")
    if facts.wrong_object and own.verdict != "FAIL":
        return Verdict("FAIL", f"WRONG OBJECT: {own.reason or 'a decode opened another object'}")
    if facts.wrong_object:
        return own
    if facts.timeout:
        return Verdict("ERROR", facts.timeout)
    skipped_before_start = setup is not None and setup.outcome == "skipped"
    if facts.server_errors and not skipped_before_start:
        return Verdict("ERROR", f"reference server raised: {facts.server_errors[0][:200]}")
    return own


def _from_phases(setup: Phase | None, call: Phase | None, teardown: Phase | None) -> Verdict:
    if setup is not None and setup.outcome == "failed":
        if setup.errno == errno.EOPNOTSUPP:
            # the export itself refused (knfsd: "does not support NFS export"): the same
            # answer name_to_handle_at gives locally, so the same verdict
            return Verdict("FAIL", "not exportable (EOPNOTSUPP) at set-up: " + setup.message)
        return Verdict("ERROR", "setup: " + setup.message)
    if setup is not None and setup.outcome == "skipped":
        return Verdict("SKIP", setup.message)
    if call is None:
        return Verdict("ERROR", "scenario did not run")
    if call.xfail is not None:
        return Verdict("XFAIL", call.xfail) if call.outcome == "skipped" else Verdict("PASS", "")
    if call.outcome == "skipped":
        return Verdict("SKIP", call.message)
    if call.outcome == "failed":
        reason = call.message.removeprefix("AssertionError: ")
        if call.errno == errno.EOPNOTSUPP:
            # not a SKIP: a server that cannot be exported fails every export scenario. The
            # errno does not say why (the server turned export support off, or the kernel
            # refuses this kind of handle, e.g. AT_HANDLE_CONNECTABLE without fh_to_parent)
            return Verdict("FAIL", "not exportable: the kernel refused the handle "
                           "(EOPNOTSUPP): " + reason)
        if call.errno == errno.ESTALE:
            # ESTALE is an answer of the system under test, never of the suite: a live,
            # cached object it could not name or reach (knfsd refusing a handle it just
            # made, the FUSE mount failing a walk) is a failure it found, not an ERROR
            return Verdict("FAIL", "ESTALE on a live object: " + reason)
        return Verdict("FAIL" if call.is_assert else "ERROR", reason)
    if teardown is not None and teardown.outcome == "failed":
        return Verdict("ERROR", "teardown: " + teardown.message)
    return Verdict("PASS", "")


def is_must(level: str, wrong_object: bool, kernel_trouble: bool = False) -> bool:
    """A MUST scenario, or any cell where a handle opened another object or the kernel
    logged trouble (WARN, oops, a hang): those break a MUST whatever the declared level."""
    return level == "MUST" or wrong_object or kernel_trouble


def claim_broken(claimed: bool, verdict_: str) -> bool:
    """The profile claims what the scenario checks, and the scenario failed."""
    return claimed and verdict_ == "FAIL"


def outcome_class(outcome: str | None) -> str:
    """'same', 'other' or 'error': ESTALE and ENOENT (and NFS3ERR_STALE) are one class."""
    if outcome in ("same", "other"):
        return outcome
    return "error"
