"""Run the nfsconf command line (argv) with a profiler that follows every call chain of
nfsconf code, in every thread, and print as JSON the chains that go back into a module they
had left (cli -> run -> vm -> run: a run's data returning to a module it passed through).

A module here is a top-level unit of the package (as tests/test_layers.py counts them): calls
inside one package are that package's own business. Only functions (and the closures they
hand on) are steps of the flow; a method is the behaviour of its object wherever the object
travels (a Stoppable's terminate() called from process.stop, a fid's describe())."""

from __future__ import annotations

import json
import sys
import threading
from types import FrameType
from typing import Any

from nfsconf.cli import main

revisits: dict[str, int] = {}


def unit(frame: FrameType) -> str | None:
    qualname = frame.f_code.co_qualname
    if "." in qualname and "<locals>" not in qualname:
        return None  # a method
    parts = str(frame.f_globals.get("__name__", "")).split(".")
    return ".".join(parts[:2]) if parts[0] == "nfsconf" and len(parts) > 1 else None


def chain(frame: FrameType | None) -> list[str]:
    units: list[str] = []
    while frame is not None:
        u = unit(frame)
        if u is not None and (not units or units[-1] != u):
            units.append(u)
        frame = frame.f_back
    return units[::-1]  # outermost first


def profile(frame: FrameType, event: str, arg: Any) -> None:
    if event != "call" or unit(frame) is None:
        return
    units = chain(frame)
    if len(set(units)) != len(units):
        key = " -> ".join(units)
        revisits[key] = revisits.get(key, 0) + 1


if __name__ == "__main__":
    threading.setprofile(profile)
    sys.setprofile(profile)
    try:
        status = main(sys.argv[1:])
    finally:
        sys.setprofile(None)
        threading.setprofile(None)  # type: ignore[arg-type]
    print(json.dumps({"status": status, "revisits": revisits}))
