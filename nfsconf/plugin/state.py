"""The plugin's state is this one object, registered at configure time under one stash key
(as pytest's junitxml registers its LogXML): the run's options, the results writer, the
progress count; its hooks are its methods."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from itertools import islice
from typing import Any

import pytest
from _pytest.runner import runtestprotocol

from nfsconf import requires, shard
from nfsconf.claims import Claims
from nfsconf.kmsg import KmsgWatch
from nfsconf.mounttable import deferred_signals
from nfsconf.plan import RunContext, from_plugin
from nfsconf.plugin import cells
from nfsconf.report.matrix import progress_line
from nfsconf.report.results import PLANNED, RUNNING, Result, ResultsWriter, write_json
from nfsconf.servers.builtin import find_profile, installed_builtins
from nfsconf.servers.profile import Profile
from nfsconf.watchdog import Watchdog

# Inside the knfsd VM every lab is exported twice over, no_subtree_check (0x81 fids) and
# subtree_check (0x82), and the exportfs-level scenarios run there too ("local": the kernel
# under test's own name_to_handle_at/open_by_handle_at).
TRANSPORT_VARIANTS = {"knfsd": ("local", "knfsd", "knfsd-subtree")}
RECORDS = "nfsconf-records"  # the user property a teardown report carries them in


class NfsconfRun:
    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.options = from_plugin(config.getoption)
        # `nfsconf run` hands its RunContext in as a plugin; plain pytest has none
        self.context = next((p for p in config.pluginmanager.get_plugins()
                             if isinstance(p, RunContext)), RunContext())
        out = self.options.out
        # with --jobs, pytest-xdist workers run the cells and the controller writes records
        self.writer = ResultsWriter(out / "results.jsonl") \
            if out and not hasattr(config, "workerinput") else None
        self.session: pytest.Session | None = None
        self.done = 0
        self.total = 0  # with --jobs, from the workers' collection
        # a guest of a split matrix: the cells it takes (claims.py), and each cell's place
        # in the matrix for its progress line (its own count says little beside the others)
        self.claims = Claims.open(self.options.claims, self.options.out.name) \
            if self.options.claims and self.options.out else None
        self.place: dict[str, int] = {}
        self._next: dict[str, int] = {}  # where the cells after a cell start in the session
        self._profiles: list[Profile] | None = None
        if self.writer is not None:  # under `nfsconf run`: SIGTERM unwinds like Ctrl-C, so
            # every fixture unmounts what it mounted
            signal.signal(signal.SIGTERM, signal.default_int_handler)

    def close(self) -> None:
        from nfsconf.fuse import spawner

        with deferred_signals():  # a lab a cell left (an interrupted set-up): unmount it
            for lab in list(self.context.labs):
                lab.stop()
        spawner.stop()
        if self.writer is not None:
            self.writer.close()

    @property
    def profiles(self) -> list[Profile]:
        if self._profiles is None:
            specs = self.options.profiles
            self._profiles = [find_profile(s) for s in specs] if specs else installed_builtins()
        return self._profiles

    # -- collection ----------------------------------------------------------------------
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        self.session = session

    def pytest_itemcollected(self, item: pytest.Item) -> None:
        """Let -k select by scenario ID (`-k DEC-COLD`), not only by test function name."""
        marker = item.get_closest_marker("scenario")
        if marker is not None:
            item.extra_keyword_matches.add(marker.args[0])

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        if "profile" in metafunc.fixturenames:
            metafunc.parametrize("profile", self.profiles, ids=[p.name for p in self.profiles])
        if "transport_name" in metafunc.fixturenames:
            chosen = self.options.transport
            metafunc.parametrize("transport_name", TRANSPORT_VARIANTS.get(chosen, (chosen,)))

    @pytest.hookimpl(trylast=True)  # after -k: only the cells that stay are judged
    def pytest_collection_modifyitems(self, config: pytest.Config,
                                      items: list[pytest.Item]) -> None:
        self._select(config, items)
        pynfs = bool(self.options.pynfs)
        for item in items:
            reason = cells.declared_skip(item, pynfs)
            if reason is not None:
                # known now: the cell skips before any fixture, so the declared SKIPs (over
                # half of a knfsd matrix) cost no set-up, kernel-log watch or running.json
                cells.of(item).declared_skip = reason
                item.add_marker(pytest.mark.skip(reason=reason))

    def _select(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        """This shard's cells (a guest of a split matrix: every cell, from its part on); a
        resumed run's cells without a record."""
        if self.claims is not None:
            self._take_from(items)
        elif self.options.shard:
            k, n = shard.parse(self.options.shard)
            other = [i for i in items if (c := cells.cell_fields(i)) is not None
                     and shard.part_of(c["profile"], c["id"], n) != k]
            if other:
                config.hook.pytest_deselected(items=other)
                gone = {id(i) for i in other}
                items[:] = [i for i in items if id(i) not in gone]
        out = self.options.out
        if not (self.options.resume and out):
            return
        from nfsconf.report.results import recorded_nodes

        done = recorded_nodes(out / "results.jsonl")
        finished = [item for item in items if item.nodeid in done]
        if finished:
            config.hook.pytest_deselected(items=finished)
            items[:] = [item for item in items if item.nodeid not in done]

    def _take_from(self, items: list[pytest.Item]) -> None:
        """A guest of a split matrix: the whole matrix is the run's plan (what the guest
        takes of it, the host writes as its own plan: vm/lane.py). Each guest starts at
        its own part, so guests seldom reach for the same cell until one runs out."""
        assert self.claims is not None
        self.claims.write_plan([i.nodeid for i in items if i.get_closest_marker("scenario")])
        self.place = {item.nodeid: n for n, item in enumerate(items, 1)}
        self.total = len(items)
        if self.options.shard:
            k, n = shard.parse(self.options.shard)
            cut = len(items) * (k - 1) // n
            items[:] = items[cut:] + items[:cut]

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        """What the run sets out to record (after -k), so that a run that ends short can
        name what is missing. A resumed run keeps the plan of the run it finishes."""
        out = self.options.out
        if self.claims is not None:
            self._next = {item.nodeid: n for n, item in enumerate(session.items, 1)}
            return
        # with --jobs every worker collects the same cells and writes the same plan
        if out and session.items and not (out / PLANNED).exists():
            write_json(out / PLANNED,
                       [i.nodeid for i in session.items if i.get_closest_marker("scenario")])

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        """With --jobs: the number of cells, for the progress lines."""
        self.total = len(ids)

    # -- running a cell ------------------------------------------------------------------
    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_protocol(self, item: pytest.Item, nextitem: pytest.Item | None
                                ) -> bool | None:
        """A guest of a split matrix runs only the cells it takes; the fixtures it set up
        are kept or torn down for the next cell it takes, not for the next collected."""
        if self.claims is None:
            return None  # pytest's own protocol
        if not self.claims.take(item.nodeid):
            return True
        following = islice(item.session.items, self._next[item.nodeid], None) \
            if nextitem else ()
        mine = next((i for i in following if self.claims.take(i.nodeid)), None)
        item.ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
        runtestprotocol(item, nextitem=mine, log=True)
        item.ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
        return True

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        if cells.of(item).declared_skip is not None:
            return  # pytest's skip marker ends it before anything runs
        cells.of(item).kmsg = KmsgWatch()
        cell = cells.cell_fields(item)
        if self.options.out and cell is not None:  # if the kernel crashes now, the host
            write_json(self.options.out / RUNNING, cell)  # knows which cell

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_call(self, item: pytest.Item) -> Iterator[None]:
        run = cells.of(item)

        def abort_all() -> list[str]:
            return [note for lab in run.labs for note in lab.abort()]

        marker = item.get_closest_marker("scenario")
        limit = (marker.kwargs.get("timeout") if marker else None) or self.options.timeout
        with Watchdog(limit, abort_all) as dog:
            yield
        if dog.fired:
            run.timeout = dog.message

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item,
                                  call: pytest.CallInfo[None]) -> Iterator[None]:
        outcome = yield
        rep: pytest.TestReport = outcome.get_result()
        run = cells.of(item)
        exc = call.excinfo.value if call.excinfo is not None else None
        if isinstance(exc, requires.Unsupported):  # a found need unmet: SKIP, as pytest.skip
            rep.outcome = "skipped"
            rep.longrepr = (str(item.path), item.location[1] or 0, f"Skipped: {exc}")
        run.reports[rep.when] = rep
        if isinstance(exc, OSError) and exc.errno is not None:
            run.errnos[rep.when] = exc.errno
        if rep.when == "teardown":
            # the records travel with the report: with --jobs, the process that writes
            # results.jsonl is not the worker that ran the cell
            rep.user_properties.append((RECORDS, [json.dumps(r.to_record(), default=str)
                                                  for r in cells.records(item)]))

    # -- reporting -----------------------------------------------------------------------
    @pytest.hookimpl(tryfirst=True)
    def pytest_report_teststatus(self, report: pytest.TestReport, config: pytest.Config
                                 ) -> tuple[str, str, str] | None:
        """Under `nfsconf run` each scenario prints one line of its own; pytest's dots go."""
        if self.writer is None:
            return None
        if report.when == "call" or (report.when == "setup" and not report.passed):
            return ("error" if report.when == "setup" and report.failed
                    else report.outcome), "", ""
        return "", "", ""

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when != "teardown" or self.writer is None:
            return
        lines = next((v for k, v in report.user_properties if k == RECORDS), None)
        if not lines:
            return
        for line in lines:
            self.writer.write_line(line)
        (self.writer.path.parent / RUNNING).unlink(missing_ok=True)
        result = Result.from_record(json.loads(lines[-1]))
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            self.done += 1
            total = self.total or (self.session.testscollected if self.session else 0)
            reporter.write_line(progress_line(result, self.place.get(report.nodeid, self.done),
                                              total))


STATE = pytest.StashKey[NfsconfRun]()
