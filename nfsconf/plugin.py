"""The nfsconf pytest plugin: profile and transport parametrization, the lab fixture, and
one results.jsonl record per scenario x profile x transport.

Loaded by `nfsconf run` with `-p nfsconf.plugin`; scenarios mark themselves with
`@pytest.mark.scenario("ID", "MUST"|"SHOULD", claim=None)`."""

from __future__ import annotations

import errno
import re
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nfsconf.kmsg import KmsgWatch, kernel_trouble
from nfsconf.lab import Lab, stop_all_labs
from nfsconf.report.results import Result, ResultsWriter
from nfsconf.servers.builtin import find_profile, installed_builtins
from nfsconf.servers.profile import Profile
from nfsconf.servers.refserver import trace_tail
from nfsconf.transports.base import Decoded, Handle, Obj, describe, verdict_of
from nfsconf.watchdog import Watchdog

TRANSPORTS = ("local", "ganesha", "knfsd")
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


def handle_fields(handle: Handle) -> dict[str, Any]:
    """The handle as the report shows it: raw bytes and, when a codec knows the type, its
    named fields."""
    out = handle.to_dict()
    try:
        from nfsconf.handles import decode_fid

        out["fields"] = decode_fid(handle.fh_type, handle.data).to_dict()
    except (ImportError, ValueError) as e:
        out["fields_error"] = str(e)
    return out


class Evidence:
    """What a scenario saw, for the record: decodes, handles, notes."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}
        self.errno: str | None = None
        self.handle: dict[str, Any] | None = None
        self.wrong_object = False

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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    out = config.getoption("--nfsconf-out")
    if not (config.getoption("--nfsconf-resume") and out):
        return
    from nfsconf.report.results import recorded_nodes

    done = recorded_nodes(Path(out) / "results.jsonl")
    finished = [item for item in items if item.nodeid in done]
    if finished:
        config.hook.pytest_deselected(items=finished)
        items[:] = [item for item in items if item.nodeid not in done]


def selected_profiles(config: pytest.Config) -> list[Profile]:
    specs = config.getoption("--nfsconf-profile")
    return [find_profile(s) for s in specs] if specs else installed_builtins()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "scenario(id, level, claim=None): conformance scenario")
    config.addinivalue_line("markers", "local_only: needs name_to_handle_at on the FUSE mount")
    config.addinivalue_line("markers", "nfs_only: an NFS wire check")
    out = config.getoption("--nfsconf-out")
    if out:
        config.stash[_RESULTS] = ResultsWriter(Path(out) / "results.jsonl")
    # SIGTERM must unwind like Ctrl-C so every fixture unmounts what it mounted.
    signal.signal(signal.SIGTERM, signal.default_int_handler)


def pytest_unconfigure(config: pytest.Config) -> None:
    stop_all_labs()
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
    if transport_name != "local" and request.node.get_closest_marker("local_only"):
        pytest.skip("exportfs-level check (name_to_handle_at on the FUSE mount): "
                    "runs on the local transport")
    if transport_name == "local" and request.node.get_closest_marker("nfs_only"):
        pytest.skip("NFS wire check: runs on the ganesha and knfsd transports")
    the_lab = Lab(profile, transport_name).start()
    request.node.stash.setdefault(_LABS, []).append(the_lab)
    evidence.note("server_pid", the_lab.server.pid if the_lab.server else None)
    try:
        yield the_lab
    finally:
        log_tail = the_lab.server.log_tail() if the_lab.server else ""
        trace = trace_tail(the_lab.trace_path)
        if trace:  # what the kernel asked the reference server and what it answered
            evidence.note("trace_tail", trace)
        notes = the_lab.stop()
        if notes:
            evidence.note("teardown", notes)
            evidence.note("server_log", log_tail)


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


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    def abort_all() -> list[str]:
        return [note for lab in item.stash.get(_LABS, []) for note in lab.abort()]

    with Watchdog(item.config.getoption("--nfsconf-timeout"), abort_all) as dog:
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


def _verdict(phases: dict[str, pytest.TestReport]) -> tuple[str, str]:
    setup, call, teardown = (phases.get(k) for k in ("setup", "call", "teardown"))
    if setup is not None and setup.failed:
        return "ERROR", "setup: " + _reason(setup)
    if setup is not None and setup.skipped:
        return "SKIP", _reason(setup)
    if call is None:
        return "ERROR", "scenario did not run"
    if hasattr(call, "wasxfail"):
        return ("XFAIL", call.wasxfail) if call.skipped else ("PASS", "")
    if call.skipped:
        return "SKIP", _reason(call)
    if call.failed:
        crash = getattr(call.longrepr, "reprcrash", None)
        is_assert = crash is not None and str(crash.message).startswith("AssertionError")
        reason = _reason(call).removeprefix("AssertionError: ")
        if f"[Errno {errno.EOPNOTSUPP}]" in reason:
            # not a SKIP: a server that cannot be exported fails every export scenario
            return "FAIL", f"not exportable (the server turned export support off): {reason}"
        return ("FAIL" if is_assert else "ERROR"), reason
    if teardown is not None and teardown.failed:
        return "ERROR", "teardown: " + _reason(teardown)
    return "PASS", ""


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    rep: pytest.TestReport = outcome.get_result()
    item.stash.setdefault(_PHASES, {})[rep.when] = rep
    if rep.when == "teardown":
        _write_record(item)


def _write_record(item: pytest.Item) -> None:
    marker = item.get_closest_marker("scenario")
    if marker is None:
        return
    params = getattr(item, "callspec", None)
    profile: Profile | None = params.params.get("profile") if params else None
    phases = item.stash[_PHASES]
    verdict, reason = _verdict(phases)
    ev = item.stash.get(_EVIDENCE, Evidence())
    if _TIMEOUT in item.stash:
        verdict, reason = "ERROR", item.stash[_TIMEOUT]
    watch = item.stash.get(_KMSG, None)
    if watch is not None:
        trouble = kernel_trouble(watch.new_lines())
        watch.close()
        if trouble:
            ev.note("kernel_log", trouble[:50])
            verdict, reason = "FAIL", f"kernel: {trouble[0][:200]}"
    if ev.errno is None and (m := re.search(r"\[Errno (\d+)\]", reason)):
        ev.errno = errno.errorcode.get(int(m.group(1)), m.group(1))
    claim = marker.kwargs.get("claim")
    variant = "-".join(str(v) for k, v in params.params.items()
                       if k not in ("profile", "transport_name")) if params else ""
    result = Result(
        id=marker.args[0], variant=variant, level=marker.args[1], wrong_object=ev.wrong_object,
        profile=profile.name if profile else "-",
        transport=params.params.get("transport_name", "-") if params else "-",
        verdict=verdict, reason=reason, errno=ev.errno, claim=claim,
        claimed=bool(claim and profile and getattr(profile.claims, claim)),
        handle=ev.handle, duration=round(sum(r.duration for r in phases.values()), 3),
        evidence=ev.data, node=item.nodeid,
    )
    writer = item.config.stash.get(_RESULTS, None)
    if writer is not None:
        writer.write(result)
    reporter = item.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None and writer is not None:
        done = item.config.stash[_DONE] = item.config.stash.get(_DONE, 0) + 1
        total = item.session.testscollected
        detail = f"  {result.errno}" if result.errno else ""
        flag = "  (claim broken)" if result.claim_broken else ""
        why = f"  {reason}" if verdict != "PASS" and reason else ""
        count = f"[{done:>{len(str(total))}}/{total}]"
        where = result.profile if result.transport == "local" else \
            f"{result.profile} [{result.transport}]"
        reporter.write_line(f"{count} {result.row:<24} {where:<18} "
                            f"{verdict:<5}{detail}{flag}{why}"[:200])
