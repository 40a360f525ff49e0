"""What the plugin knows of one scenario cell while it runs, and the records it becomes.

Everything a cell gathers — its evidence, its labs, the pytest report of each phase, the
errno that failed a phase, the watchdog's message, the kernel log watch — is one `CellRun`
under one stash key of the item; `records` turns it into results.jsonl's records with the
verdict rules of nfsconf/verdict.py."""

from __future__ import annotations

import errno
from dataclasses import dataclass, field
from typing import Any

import pytest

from nfsconf import requires
from nfsconf.evidence import Evidence
from nfsconf.kmsg import KmsgWatch, kernel_trouble
from nfsconf.lab import Lab
from nfsconf.report.results import Result
from nfsconf.servers.profile import Profile
from nfsconf.verdict import CellFacts, Phase
from nfsconf.verdict import verdict as judge

PHASES = ("setup", "call", "teardown")


@dataclass
class CellRun:
    evidence: Evidence = field(default_factory=Evidence)
    labs: list[Lab] = field(default_factory=list)
    reports: dict[str, pytest.TestReport] = field(default_factory=dict)  # by phase
    errnos: dict[str, int] = field(default_factory=dict)  # by phase: the OSError's errno
    timeout: str | None = None  # the watchdog's message when it fired
    kmsg: KmsgWatch | None = None
    declared_skip: str | None = None  # an unmet declared need, found at collection


KEY = pytest.StashKey[CellRun]()


def of(item: pytest.Item) -> CellRun:
    """The item's CellRun, made on first use."""
    if KEY not in item.stash:
        item.stash[KEY] = CellRun()
    return item.stash[KEY]


def cell_fields(item: pytest.Item) -> dict[str, Any] | None:
    """The identity of a scenario cell: what its record and a crash record are keyed by."""
    marker = item.get_closest_marker("scenario")
    if marker is None:
        return None
    params = getattr(item, "callspec", None)
    profile: Profile | None = params.params.get("profile") if params else None
    claim = marker.kwargs.get("claim")
    variant = "-".join(str(v) for k, v in params.params.items()
                       if k not in ("profile", "transport_name")) if params else ""
    return {"id": marker.args[0], "variant": variant, "level": marker.args[1],
            "profile": profile.name if profile else "-",
            "transport": params.params.get("transport_name", "-") if params else "-",
            "claim": claim, "claimed": bool(claim and profile and getattr(profile.claims, claim)),
            "node": item.nodeid}


def declared_skip(item: pytest.Item, pynfs: bool) -> str | None:
    """Why a scenario cell cannot run, from its declared `where` and `needs` against its
    profile, transport and kernel (nfsconf/requires.py): None when it can, or when ITEM is
    no scenario cell."""
    marker = item.get_closest_marker("scenario")
    params = getattr(item, "callspec", None)
    if marker is None or params is None or "profile" not in params.params:
        return None
    setting = requires.Setting(params.params["profile"],
                               params.params.get("transport_name", "local"), pynfs=pynfs)
    return requires.unmet(setting, marker.kwargs.get("where", "any"),
                          marker.kwargs.get("needs", ()))


def _reason(rep: pytest.TestReport) -> str:
    if rep.skipped and isinstance(rep.longrepr, tuple):
        return str(rep.longrepr[2]).removeprefix("Skipped: ")
    crash = getattr(rep.longrepr, "reprcrash", None)
    if crash is not None:
        return str(crash.message).splitlines()[0][:300]
    return str(rep.longrepr).strip().splitlines()[-1][:300] if rep.longrepr else ""


def _phase(rep: pytest.TestReport | None, errno_: int | None = None) -> Phase | None:
    if rep is None:
        return None
    crash = getattr(rep.longrepr, "reprcrash", None)
    is_assert = crash is not None and str(crash.message).startswith("AssertionError")
    xfail = getattr(rep, "wasxfail", None)
    return Phase(rep.outcome, _reason(rep), is_assert, xfail, errno_)


def records(item: pytest.Item) -> list[Result]:
    """The cell's record, after those of the extra cells it made (pynfs's codes): a resume
    re-runs a cell that has no record of its own."""
    cell = cell_fields(item)
    if cell is None:
        return []
    run = of(item)
    ev = run.evidence
    trouble: list[str] = []
    if run.kmsg is not None:
        trouble = kernel_trouble(run.kmsg.new_lines())
        run.kmsg.close()
        if trouble:
            ev.note("kernel_log", trouble[:50])
    facts = CellFacts(kernel_trouble=tuple(trouble), wrong_object=ev.wrong_object,
                      timeout=run.timeout,
                      server_errors=tuple(ev.data.get("server_exceptions", ())))
    judged = judge(*(_phase(run.reports.get(k), run.errnos.get(k)) for k in PHASES), facts)
    failed_with = next((run.errnos[k] for k in PHASES if k in run.errnos), None)
    if ev.errno is None and failed_with is not None:
        ev.errno = errno.errorcode.get(failed_with, str(failed_with))
    extra = [Result(**{**cell, "id": x["id"], "variant": x["variant"], "level": "SHOULD",
                       "claim": None, "claimed": False,
                       "node": f"{cell['node']}::{x['id']}/{x['variant']}"},
                    verdict=x["verdict"], reason=x["reason"][:300], evidence=x["evidence"])
             for x in ev.extra]
    return [*extra, Result(**cell, wrong_object=ev.wrong_object, verdict=judged.verdict,
                           reason=judged.reason, errno=ev.errno, handle=ev.handle,
                           duration=round(sum(r.duration for r in run.reports.values()), 3),
                           evidence=ev.data)]
