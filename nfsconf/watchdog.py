"""A per-scenario time limit. A FUSE server that stops answering leaves the scenario blocked
in a syscall on its mount; aborting the connection makes that syscall fail with ENOTCONN,
so the scenario ends, its cell says why, and the run goes on."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class Watchdog:
    def __init__(self, limit: float, on_expire: Callable[[], list[str]]) -> None:
        self.limit = limit
        self.on_expire = on_expire
        self.fired = False
        self.notes: list[str] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="nfsconf-watchdog",
                                        daemon=True)

    def _watch(self) -> None:
        if self._done.wait(self.limit):
            return
        self.fired = True
        try:
            self.notes = self.on_expire()
        except Exception as e:  # the watchdog must never die silently
            self.notes = [f"watchdog could not abort: {e}"]

    def __enter__(self) -> Watchdog:
        self.started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    @property
    def message(self) -> str:
        return (f"time limit {self.limit:g} s exceeded: the server stopped answering; "
                + ("; ".join(self.notes) or "nothing to abort"))
