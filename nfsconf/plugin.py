"""The nfsconf pytest plugin: profile and transport parametrization, the lab fixture, and
one results.jsonl record per scenario x profile x transport.

Loaded by `nfsconf run` with `-p nfsconf.plugin`; scenarios mark themselves with
`@pytest.mark.scenario("ID", "MUST"|"SHOULD", claim=None)`."""

from __future__ import annotations

import errno
import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nfsconf import requires, shard
from nfsconf.evidence import Evidence
from nfsconf.kmsg import KmsgWatch, kernel_trouble
from nfsconf.lab import Lab, stop_all_labs
from nfsconf.report.matrix import progress_line
from nfsconf.report.results import PLANNED, RUNNING, Result, ResultsWriter, write_json
from nfsconf.run import TRANSPORTS
from nfsconf.scenario import Cell
from nfsconf.servers.builtin import find_profile, installed_builtins
from nfsconf.servers.profile import Profile
from nfsconf.servers.refserver import read_trace
from nfsconf.verdict import CellFacts, Phase
from nfsconf.verdict import verdict as judge
from nfsconf.watchdog import Watchdog

# Inside the knfsd VM every lab is exported twice over, no_subtree_check (0x81 fids) and
# subtree_check (0x82), and the exportfs-level scenarios run there too ("local": the kernel
# under test's own name_to_handle_at/open_by_handle_at).
TRANSPORT_VARIANTS = {"knfsd": ("local", "knfsd", "knfsd-subtree")}
_RESULTS = pytest.StashKey[ResultsWriter]()
_EVIDENCE = pytest.StashKey["Evidence"]()
_DONE = pytest.StashKey[int]()
_LABS = pytest.StashKey[list[Lab]]()
_TIMEOUT = pytest.StashKey[str]()
_KMSG = pytest.StashKey[KmsgWatch]()
_PHASES = pytest.StashKey[dict[str, pytest.TestReport]]()
_ERRNOS = pytest.StashKey[dict[str, int]]()  # by phase: the errno of the OSError that failed it
_TOTAL = pytest.StashKey[int]()
_RECORDS = "nfsconf-records"  # the user property a teardown report carries them in
_CONFIG: dict[str, pytest.Config] = {}  # the process's config, for the report hooks


# -- options and parametrization ---------------------------------------------------------
def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("nfsconf")
    group.addoption("--nfsconf-profile", action="append", default=[],
                    help="profile name or TOML file (repeatable; default: installed built-ins)")
    group.addoption("--nfsconf-transport", default="local", choices=TRANSPORTS)
    group.addoption("--nfsconf-out", default=None, help="directory for results.jsonl")
    group.addoption("--nfsconf-fuzz-seed", type=int, default=1,
                    help="seed of the fuzz scenarios (default 1)")
    group.addoption("--nfsconf-fuzz-budget", type=int, default=200,
                    help="mutated handles per fuzz scenario (default 200)")
    group.addoption("--nfsconf-timeout", type=float, default=120.0,
                    help="time limit of one scenario in seconds (default 120)")
    group.addoption("--nfsconf-resume", action="store_true",
                    help="skip every scenario results.jsonl in --nfsconf-out already records")
    group.addoption("--nfsconf-shard", default=None, metavar="K/N",
                    help="only part K of N of the (profile, scenario) pairs")
    group.addoption("--nfsconf-pynfs", default=None, metavar="DIR",
                    help="a built pynfs tree (nfsconf.pynfs.prepare) to run on NFS exports")
    group.addoption("--nfsconf-pynfs-flag", action="append", default=[], metavar="FLAG",
                    help="pynfs flag to run (repeatable; default: the file-handle ones)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    spec = config.getoption("--nfsconf-shard")
    if spec:
        k, n = shard.parse(spec)
        other = [i for i in items if (c := cell_fields(i)) is not None
                 and shard.part_of(c["profile"], c["id"], n) != k]
        if other:
            config.hook.pytest_deselected(items=other)
            gone = {id(i) for i in other}
            items[:] = [i for i in items if id(i) not in gone]
    out = config.getoption("--nfsconf-out")
    if not (config.getoption("--nfsconf-resume") and out):
        return
    from nfsconf.report.results import recorded_nodes

    done = recorded_nodes(Path(out) / "results.jsonl")
    finished = [item for item in items if item.nodeid in done]
    if finished:
        config.hook.pytest_deselected(items=finished)
        items[:] = [item for item in items if item.nodeid not in done]


def pytest_collection_finish(session: pytest.Session) -> None:
    """What the run sets out to record (after -k), so that a run that ends short can name
    what is missing. A resumed run keeps the plan of the run it finishes."""
    out = session.config.getoption("--nfsconf-out")
    # with --jobs every worker collects the same cells and writes the same plan
    if out and session.items and not (Path(out) / PLANNED).exists():
        write_json(Path(out) / PLANNED,
                    [i.nodeid for i in session.items if i.get_closest_marker("scenario")])


def selected_profiles(config: pytest.Config) -> list[Profile]:
    specs = config.getoption("--nfsconf-profile")
    return [find_profile(s) for s in specs] if specs else installed_builtins()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "scenario(id, level, claim=None): conformance scenario")
    _CONFIG["config"] = config
    out = config.getoption("--nfsconf-out")
    # with --jobs, pytest-xdist workers run the cells and the controller writes the records
    if out and not hasattr(config, "workerinput"):
        config.stash[_RESULTS] = ResultsWriter(Path(out) / "results.jsonl")
    # SIGTERM must unwind like Ctrl-C so every fixture unmounts what it mounted.
    signal.signal(signal.SIGTERM, signal.default_int_handler)


def pytest_unconfigure(config: pytest.Config) -> None:
    from nfsconf.fuse import spawner

    stop_all_labs()
    spawner.stop()
    if _RESULTS in config.stash:
        config.stash[_RESULTS].close()


def pytest_itemcollected(item: pytest.Item) -> None:
    """Let -k select by scenario ID (`-k DEC-COLD`), not only by test function name."""
    marker = item.get_closest_marker("scenario")
    if marker is not None:
        item.extra_keyword_matches.add(marker.args[0])


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "profile" in metafunc.fixturenames:
        profiles = selected_profiles(metafunc.config)
        metafunc.parametrize("profile", profiles, ids=[p.name for p in profiles])
    if "transport_name" in metafunc.fixturenames:
        chosen = metafunc.config.getoption("--nfsconf-transport")
        metafunc.parametrize("transport_name", TRANSPORT_VARIANTS.get(chosen, (chosen,)))


# -- fixtures ----------------------------------------------------------------------------
@pytest.fixture
def evidence(request: pytest.FixtureRequest) -> Evidence:
    ev = Evidence()
    request.node.stash[_EVIDENCE] = ev
    return ev


@pytest.fixture
def lab(request: pytest.FixtureRequest, profile: Profile, transport_name: str,
        evidence: Evidence) -> Iterator[Lab]:
    marker = request.node.get_closest_marker("scenario")
    if marker is not None:  # declared needs: SKIP before anything mounts
        setting = requires.Setting(profile, transport_name,
                                   pynfs=bool(request.config.getoption("--nfsconf-pynfs")))
        reason = requires.unmet(setting, marker.kwargs.get("where", "any"),
                                marker.kwargs.get("needs", ()))
        if reason is not None:
            pytest.skip(reason)
    the_lab = Lab(profile, transport_name).start()
    request.node.stash.setdefault(_LABS, []).append(the_lab)
    evidence.note("server_pid", the_lab.server.pid if the_lab.server else None)
    try:
        yield the_lab
    finally:
        log_tail = the_lab.server.log_tail() if the_lab.server else ""
        trace = read_trace(the_lab.trace_path)
        if trace.tail:  # what the kernel asked the reference server and what it answered
            evidence.note("trace_tail", trace.tail)
        if trace.exceptions:  # a bug of ours: the cell's verdict cannot be trusted
            evidence.note("server_exceptions", trace.exceptions)
        notes = the_lab.stop()
        if notes:
            evidence.note("teardown", notes)
            evidence.note("server_log", log_tail)
        evidence.note("timings", {k: round(v, 4) for k, v in the_lab.timings.items()})


@pytest.fixture
def cell(lab: Lab, evidence: Evidence) -> Cell:
    """The scenario API (nfsconf/scenario.py): the lab, with every encode and decode
    recorded in the cell's evidence."""
    return Cell(lab, evidence)


@pytest.hookimpl(tryfirst=True)
def pytest_report_teststatus(report: pytest.TestReport, config: pytest.Config
                             ) -> tuple[str, str, str] | None:
    """Under `nfsconf run` each scenario prints one line of its own; pytest's dots go."""
    if _RESULTS not in config.stash:
        return None
    if report.when == "call" or (report.when == "setup" and not report.passed):
        return ("error" if report.when == "setup" and report.failed else report.outcome), "", ""
    return "", "", ""


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    item.stash[_KMSG] = KmsgWatch()
    out = item.config.getoption("--nfsconf-out")
    cell = cell_fields(item)
    if out and cell is not None:  # if the kernel crashes now, the host knows which cell
        write_json(Path(out) / RUNNING, cell)


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


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    def abort_all() -> list[str]:
        return [note for lab in item.stash.get(_LABS, []) for note in lab.abort()]

    marker = item.get_closest_marker("scenario")
    limit = (marker.kwargs.get("timeout") if marker else None) or item.config.getoption(
        "--nfsconf-timeout")
    with Watchdog(limit, abort_all) as dog:
        yield
    if dog.fired:
        item.stash[_TIMEOUT] = dog.message


# -- records -----------------------------------------------------------------------------
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


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    rep: pytest.TestReport = outcome.get_result()
    exc = call.excinfo.value if call.excinfo is not None else None
    if isinstance(exc, requires.Unsupported):  # a found need unmet: SKIP, as pytest.skip
        rep.outcome = "skipped"
        rep.longrepr = (str(item.path), item.location[1] or 0, f"Skipped: {exc}")
    item.stash.setdefault(_PHASES, {})[rep.when] = rep
    if isinstance(exc, OSError) and exc.errno is not None:
        item.stash.setdefault(_ERRNOS, {})[rep.when] = exc.errno
    if rep.when == "teardown":
        # the records travel with the report: with --jobs, the process that writes
        # results.jsonl is not the worker that ran the cell
        rep.user_properties.append((_RECORDS, [json.dumps(r.to_record(), default=str)
                                               for r in _records(item)]))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when != "teardown":
        return
    lines = next((v for k, v in report.user_properties if k == _RECORDS), None)
    config = _CONFIG.get("config")
    writer = config.stash.get(_RESULTS, None) if config is not None else None
    if not lines or writer is None:
        return
    for line in lines:
        writer.write_line(line)
    (writer.path.parent / RUNNING).unlink(missing_ok=True)
    result = Result.from_record(json.loads(lines[-1]))
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        done = config.stash[_DONE] = config.stash.get(_DONE, 0) + 1
        total = config.stash.get(_TOTAL, 0) or report_total(config)
        reporter.write_line(progress_line(result, done, total))


def report_total(config: pytest.Config) -> int:
    session = getattr(config, "_nfsconf_session", None)
    return session.testscollected if session is not None else 0


def pytest_sessionstart(session: pytest.Session) -> None:
    session.config._nfsconf_session = session  # type: ignore[attr-defined]


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node: Any, ids: list[str]) -> None:
    """With --jobs: the number of cells, for the progress lines (each worker collects all)."""
    config = _CONFIG.get("config")
    if config is not None:
        config.stash[_TOTAL] = len(ids)


def _records(item: pytest.Item) -> list[Result]:
    """The cell's record, after those of the extra cells it made (pynfs's codes): a resume
    re-runs a cell that has no record of its own."""
    cell = cell_fields(item)
    if cell is None:
        return []
    phases = item.stash[_PHASES]
    ev = item.stash.get(_EVIDENCE, Evidence())
    trouble: list[str] = []
    watch = item.stash.get(_KMSG, None)
    if watch is not None:
        trouble = kernel_trouble(watch.new_lines())
        watch.close()
        if trouble:
            ev.note("kernel_log", trouble[:50])
    facts = CellFacts(kernel_trouble=tuple(trouble), wrong_object=ev.wrong_object,
                      timeout=item.stash.get(_TIMEOUT, None),
                      server_errors=tuple(ev.data.get("server_exceptions", ())))
    errnos = item.stash.get(_ERRNOS, {})
    judged = judge(*(_phase(phases.get(k), errnos.get(k))
                     for k in ("setup", "call", "teardown")), facts)
    verdict, reason = judged.verdict, judged.reason
    failed_with = next((errnos[k] for k in ("setup", "call", "teardown") if k in errnos), None)
    if ev.errno is None and failed_with is not None:
        ev.errno = errno.errorcode.get(failed_with, str(failed_with))
    extra = [Result(**{**cell, "id": x["id"], "variant": x["variant"], "level": "SHOULD",
                       "claim": None, "claimed": False,
                       "node": f"{cell['node']}::{x['id']}/{x['variant']}"},
                    verdict=x["verdict"], reason=x["reason"][:300], evidence=x["evidence"])
             for x in ev.extra]
    return [*extra, Result(**cell, wrong_object=ev.wrong_object, verdict=verdict,
                           reason=reason, errno=ev.errno, handle=ev.handle,
                           duration=round(sum(r.duration for r in phases.values()), 3),
                           evidence=ev.data)]
