"""results.jsonl: the source of truth of a run. One env record, then one record per
scenario x profile x transport, appended and flushed as each scenario ends."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from nfsconf.errors import ResultsError
from nfsconf.verdict import claim_broken, is_must

SCHEMA = 1
# the other files of a run directory that the suite itself reads back
PLANNED = "planned.json"  # every cell the run collected (written once, at the first start)
RUNNING = "running.json"  # the cell now running; gone once its record is written




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
    node: str = ""  # the pytest node id: what --resume skips
    kind: str = "result"
    # the kernel release of the run a result came from: set when reading, written only in
    # none of the run's own records (one results file holds one kernel)
    kernel: str = ""

    def to_record(self) -> dict[str, Any]:
        """The results.jsonl record (the kernel is the env record's)."""
        data = asdict(self)
        data.pop("kernel")
        data["schema"] = SCHEMA
        return data

    @classmethod
    def from_record(cls, data: dict[str, Any]) -> Result:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    @property
    def row(self) -> str:
        return f"{self.id}/{self.variant}" if self.variant else self.id

    @property
    def must(self) -> bool:
        return is_must(self.level, self.wrong_object, self.kernel_trouble)

    @property
    def kernel_trouble(self) -> bool:
        """The kernel under test warned, oopsed or hung while this cell ran."""
        return bool(self.evidence.get("kernel_crash") or self.evidence.get("kernel_log"))

    @property
    def claim_broken(self) -> bool:
        return claim_broken(self.claimed, self.verdict)


def write_json(path: Path, data: Any) -> None:
    """Write a small JSON file whole or not at all (a crash keeps the previous one)."""
    tmp = path.with_suffix(f".tmp{os.getpid()}")  # two writers never share a temporary
    with open(tmp, "w") as f:
        json.dump(data, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class ResultsWriter:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        _drop_torn_tail(path)
        self._f = open(path, "a", encoding="utf-8")  # noqa: SIM115 - lives as long as the run

    def write(self, record: dict[str, Any] | Result) -> None:
        data = record.to_record() if isinstance(record, Result) else dict(record)
        data.setdefault("schema", SCHEMA)
        self.write_line(json.dumps(data, default=str))

    def write_line(self, line: str) -> None:
        """One record already as JSON (Result.to_record)."""
        self._f.write(line + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())  # a run killed right after keeps this record

    def close(self) -> None:
        self._f.close()


def _drop_torn_tail(path: Path) -> None:
    """A run killed mid-write leaves a last line without its newline; appending after it
    would glue the next record to it. Cut the file back to its last complete line."""
    try:
        with open(path, "rb+") as f:
            data = f.read()
            if data and not data.endswith(b"\n"):
                f.truncate(data.rfind(b"\n") + 1)
    except FileNotFoundError:
        pass


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
        if not isinstance(data, dict) or "schema" not in data:
            raise ResultsError(f"{path}:{n}: not an nfsconf results record (no schema field)")
        if data["schema"] != SCHEMA:
            writer = f" by nfsconf {envs[0]['nfsconf']}" if envs else ""
            if data.get("kind") == "env":
                writer = f" by nfsconf {data.get('nfsconf', '?')}"
            raise ResultsError(
                f"{path}:{n}: written{writer} with results schema {data['schema']!r}; this "
                f"nfsconf ({_version()}) reads schema {SCHEMA} only: read it with the nfsconf "
                "that wrote it (docs/results-schema.md lists the versions)")
        data.pop("schema")
        if data.get("kind") == "env":
            envs.append(data)
            continue
        try:
            results.append(Result(**data))
        except TypeError as e:
            raise ResultsError(f"{path}:{n}: bad result record: {e}") from e
    return envs, results


def _version() -> str:
    from nfsconf import __version__

    return __version__


@dataclass
class Run:
    """One results file, read: what the views, diff and certify work from."""

    path: Path
    envs: list[dict[str, Any]]
    results: list[Result]

    @property
    def env(self) -> dict[str, Any]:
        """The first env record: the one the run started with (a resume appends another)."""
        return self.envs[0] if self.envs else {}


def load_run(where: str | Path) -> Run:
    """A run directory or its results.jsonl; every problem is one ResultsError line."""
    path = Path(where)
    if path.is_dir():
        path = path / "results.jsonl"
    try:
        envs, results = read_results(path)
    except FileNotFoundError as e:
        raise ResultsError(f"{path}: no such results file") from e
    except (OSError, UnicodeDecodeError) as e:
        raise ResultsError(f"{path}: cannot read: {e}") from e
    kernel = envs[0].get("kernel", "") if envs else ""
    # a resumed run may hold a cell twice (re-run after a crash record): the last one counts
    last = {(r.row, r.profile, r.transport): r for r in results}
    for r in last.values():
        r.kernel = kernel
    return Run(path, envs, list(last.values()))


def run_dirs(where: str | Path) -> list[Path]:
    """WHERE as run directories: a run directory, its results.jsonl, or a tree holding run
    directories (the shards or kernels of one matrix, as CI collects them)."""
    path = Path(where)
    if path.is_file() or (path / "results.jsonl").is_file():
        return [path]
    # os.walk shrugs off directories that vanish while it looks (a run cleaning up)
    found = sorted(Path(d) for d, _, files in os.walk(path) if "results.jsonl" in files)
    if not found:
        raise ResultsError(f"{path}: no such results file, nor run directories below it")
    return found


def load_runs(paths: list[str | Path], allow_mixed: bool = False) -> Run:
    """Several run directories (shards of one matrix, or one run per kernel) as one run.
    Runs that disagree about the nfsconf version or the kernel build are refused unless
    ALLOW_MIXED (the report then has a column per kernel); two runs holding the same cell
    are refused (shards never overlap)."""
    dirs = [d for p in paths for d in run_dirs(p)]
    runs = [load_run(d) for d in dirs]
    if len(runs) == 1:
        return runs[0]
    if not allow_mixed:
        for what, key in (("nfsconf version", _version_of), ("kernel build", _build_of)):
            seen = {key(r): r for r in runs}
            if len(seen) > 1:
                a, b = list(seen.items())[:2]
                raise ResultsError(f"{a[1].path} and {b[1].path} disagree about the {what} "
                                   f"({a[0]} vs {b[0]}); give --allow-mixed to put them in "
                                   "one report anyway")
    cells: dict[tuple[str, str, str, str], Path] = {}
    results: list[Result] = []
    for run in runs:
        for r in run.results:
            key = (r.row, r.profile, r.transport, r.kernel)
            if key in cells:
                raise ResultsError(f"{run.path} and {cells[key]} both hold {r.row} of "
                                   f"{r.profile} [{r.transport}] on {r.kernel}")
            cells[key] = run.path
            results.append(r)
    # what every view prints first: the runs' environments as one
    merged = dict(runs[0].env)
    kernels = list(dict.fromkeys(str(r.env.get("kernel", "?")) for r in runs))
    merged["kernel"] = ", ".join(kernels)
    if len(kernels) > 1:
        merged["kernel_image"] = {}
    merged["profiles"] = {k: v for r in runs for k, v in (r.env.get("profiles") or {}).items()}
    merged["merged_from"] = [str(r.path.parent) for r in runs]
    envs = [merged] + [e for run in runs for e in run.envs]
    return Run(runs[0].path, envs, results)


def _version_of(run: Run) -> str:
    return str(run.env.get("nfsconf", "?"))


def _build_of(run: Run) -> str:
    image = run.env.get("kernel_image") or {}
    return str(image.get("build_id") or image.get("sha256") or run.env.get("kernel", "?"))


def recorded_nodes(path: Path) -> set[str]:
    """The pytest node ids a results file already holds a record of: what --resume skips."""
    if not path.exists():
        return set()
    return {r.node for r in read_results(path)[1] if r.node}
