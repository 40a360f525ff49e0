"""results.jsonl: the source of truth of a run. One env record, then one record per
scenario x profile x transport, appended and flushed as each scenario ends."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SCHEMA = 1
VERDICTS = ("PASS", "FAIL", "ERROR", "SKIP", "XFAIL")


class ResultsError(ValueError):
    """A results file this version cannot read."""


@dataclass
class Result:
    id: str
    variant: str
    level: str
    profile: str
    transport: str
    verdict: str
    reason: str = ""
    errno: str | None = None
    claim: str | None = None
    claimed: bool = False
    wrong_object: bool = False
    handle: dict[str, Any] | None = None
    duration: float = 0.0
    evidence: dict[str, Any] = field(default_factory=dict)
    kind: str = "result"

    @property
    def row(self) -> str:
        return f"{self.id}/{self.variant}" if self.variant else self.id

    @property
    def claim_broken(self) -> bool:
        return self.claimed and self.verdict == "FAIL"


class ResultsWriter:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._f = open(path, "a", encoding="utf-8")  # noqa: SIM115 - lives as long as the run

    def write(self, record: dict[str, Any] | Result) -> None:
        data = asdict(record) if isinstance(record, Result) else record
        data.setdefault("schema", SCHEMA)
        self._f.write(json.dumps(data, default=str) + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())  # a run killed right after keeps this record

    def close(self) -> None:
        self._f.close()


def read_results(path: Path) -> tuple[list[dict[str, Any]], list[Result]]:
    """The env records and the results of a results.jsonl; a torn last line (a run killed
    mid-write) is dropped, any other bad line is an error naming it."""
    envs: list[dict[str, Any]] = []
    results: list[Result] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as e:
            if n == len(lines):
                break
            raise ResultsError(f"{path}:{n}: not JSON: {e}") from e
        if data.get("schema") != SCHEMA:
            raise ResultsError(f"{path}:{n}: results schema {data.get('schema')!r}, this "
                               f"nfsconf reads schema {SCHEMA}")
        data.pop("schema")
        if data.get("kind") == "env":
            envs.append(data)
        else:
            results.append(Result(**data))
    return envs, results
