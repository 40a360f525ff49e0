"""`nfsconf report --format kcidb`: the runs as one KernelCI database (KCIDB) report, in the
latest schema of kcidb-io — a checkout per kernel source, a build per kernel build, a test
per cell — ready for KernelCI's `kcidb-submit`.

Two halves. `gather` reads what a run directory says about its kernel beyond results.jsonl
(the build record of `nfsconf kernel build` beside the image, the cache's record of a Debian
package, the build log, the patch files); everything after it is pure: `report` maps loaded
runs and those facts to the KCIDB dict, and nothing else.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nfsconf.errors import BuildError, ResultsError, UsageError
from nfsconf.report.results import Result, Run, load_run, run_dirs

if TYPE_CHECKING:
    from nfsconf.report.expect import Expectations

FORMAT = "kcidb"
FILE = "kcidb.json"
# the schema's patterns: an origin is [a-z0-9_]+; a path is dot-separated [a-zA-Z0-9_-]+
ORIGIN = re.compile(r"[a-z0-9_]+")
_PATH_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_ARCH_UNSAFE = re.compile(r"[^a-z0-9_]")
LOG_EXCERPT_MAX = 16384  # the schema's maxLength of every log_excerpt
BUILD_LOG_LINES = 40
PATH_ROOT = "nfsconf"
# nfsconf's architecture names (`kernel build --arch`) as kernel/KernelCI names them: the
# x86 bzImage is a 64-bit build
ARCHES = {"x86": "x86_64", "um": "um"}
# files nfsconf leaves beside a kernel image: `kernel build`'s recipe in a tree, and the
# cache's record of a Debian package it downloaded (vm/build.py, vm/kernels.py)
BUILD_RECORD = "nfsconf-build.json"
PACKAGE_RECORD = "kernel.json"
_PACKAGE_SOURCE = re.compile(r"debian (\S+): (\S+) (\S+)$")
_UNAME_DEBIAN = re.compile(r"\bDebian (\S+) \(")
_LOOK_UP = 6  # how far above the image its record may be (a package's vmlinuz is deep)
STATUSES = {"PASS": "PASS", "FAIL": "FAIL", "ERROR": "ERROR", "SKIP": "SKIP"}


def check_origin(origin: str | None) -> str:
    """The origin the user chose, or one UsageError line: KCIDB ties every object to it, so
    there is no default that would pretend to be some CI system."""
    if not origin:
        raise UsageError("--format kcidb needs --kcidb-origin NAME: the name KernelCI knows "
                         "your CI system by (lowercase letters, digits, '_')")
    if not ORIGIN.fullmatch(origin):
        raise UsageError(f"--kcidb-origin {origin!r}: a KCIDB origin is lowercase letters, "
                         f"digits and '_' only (e.g. {_suggest(origin)!r})")
    return origin


def _suggest(origin: str) -> str:
    return re.sub(r"[^a-z0-9_]+", "_", origin.lower()).strip("_") or "my_ci"


# --- what the run directories say about their kernels (the only part that reads files) ------


@dataclass(frozen=True)
class KernelFacts:
    """What is known of one run's kernel beyond its env record."""

    build_record: dict[str, Any] | None = None  # `nfsconf kernel build`'s nfsconf-build.json
    tree: str | None = None  # where that record was found
    build_log: str | None = None  # the tail of the tree's build.log
    # KCIDB's patchset hash of the series, when its files are still there and are the ones
    # the build applied (the record's own series_sha256 is another digest: see below)
    patchset_hash: str | None = None
    package: dict[str, str] | None = None  # a Debian package: suite, name, version


def gather(env: dict[str, Any]) -> KernelFacts:
    """Find the records nfsconf keeps beside the kernel image the env record names. A report
    made on another machine than the run finds none of them: the checkout and build are
    then what the env record alone says."""
    image = env.get("kernel_image") or {}
    if image.get("source_package"):  # the build record's fields already in the env
        return KernelFacts(build_record=dict(image))
    path = image.get("path")
    if not path:
        return KernelFacts()
    for where in list(Path(path).parents)[:_LOOK_UP]:
        record = _read_json(where / BUILD_RECORD)
        # the tree must still be the build that ran (its release carries the series hash)
        if record is not None and record.get("release") == env.get("kernel"):
            return KernelFacts(build_record=record, tree=str(where),
                               build_log=_log_tail(where / "build.log"),
                               patchset_hash=_patchset_hash(record))
        meta = _read_json(where / PACKAGE_RECORD)
        if meta is not None:
            found = _PACKAGE_SOURCE.match(str(meta.get("source", "")))
            if found is None or meta.get("sha256") != image.get("sha256"):
                return KernelFacts()
            suite, name, version = found.groups()
            return KernelFacts(package={"suite": suite, "name": name, "version": version})
    return KernelFacts()


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _log_tail(path: Path) -> str | None:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, 2) - 64 * 1024))
            text = f.read().decode(errors="replace")
    except OSError:
        return None
    return "\n".join(text.splitlines()[-BUILD_LOG_LINES:]) + "\n"


def _patchset_hash(record: dict[str, Any]) -> str | None:
    """KCIDB's patchset hash: sha256 over each patch's hex sha256 and a newline, in order.
    The build record keeps those digests (patch_sha256); a record from before it had them
    needs the patches: read again from the recorded series, and used only when they hash
    to the record's series_sha256 (which hashes the binary digests)."""
    from nfsconf.series import read_series, series_hash

    if not record.get("series"):
        return ""  # the schema's way of saying: no patches applied
    digests = record.get("patch_sha256")
    if isinstance(digests, list) and len(digests) == len(record["series"]):
        listing = "".join(f"{d}\n" for d in digests)
        return hashlib.sha256(listing.encode()).hexdigest()
    try:
        patches = read_series(Path(str(record.get("series_path", ""))))
    except (BuildError, OSError):
        return None
    if series_hash(patches) != record.get("series_sha256"):
        return None  # the series changed since the build: not the patches it applied
    return kcidb_patchset_hash([p.data for p in patches])


def kcidb_patchset_hash(patches: list[bytes]) -> str:
    listing = "".join(hashlib.sha256(p).hexdigest() + "\n" for p in patches)
    return hashlib.sha256(listing.encode()).hexdigest()


# --- the mapping: pure from here on ------------------------------------------------------


@dataclass(frozen=True)
class Checkout:
    """A kernel source: a Debian source package and version plus a patch series, a Debian
    kernel package, or (the host's kernel) just its release."""

    key: str  # the ID after "<origin>:"
    comment: str
    tree_name: str | None = None
    patchset_hash: str | None = None
    misc: dict[str, Any] = field(default_factory=dict)

    def to_kcidb(self, origin: str) -> dict[str, Any]:
        out: dict[str, Any] = {"id": f"{origin}:{self.key}", "origin": origin,
                               "comment": self.comment, "valid": True, "misc": self.misc}
        if self.tree_name:
            out["tree_name"] = self.tree_name
        if self.patchset_hash is not None:
            out["patchset_hash"] = self.patchset_hash
        return out


@dataclass(frozen=True)
class Build:
    """A kernel build of a checkout: the image every cell of the run ran on."""

    key: str
    checkout: Checkout
    architecture: str
    comment: str
    config_name: str | None = None
    command: str | None = None
    duration: float | None = None
    status: str | None = None
    log_excerpt: str | None = None
    misc: dict[str, Any] = field(default_factory=dict)

    def to_kcidb(self, origin: str) -> dict[str, Any]:
        out: dict[str, Any] = {"id": f"{origin}:{self.key}", "origin": origin,
                               "checkout_id": f"{origin}:{self.checkout.key}",
                               "architecture": self.architecture, "comment": self.comment,
                               "misc": self.misc}
        optional = {"config_name": self.config_name, "command": self.command,
                    "duration": self.duration, "status": self.status,
                    "log_excerpt": self.log_excerpt}
        out.update({k: v for k, v in optional.items() if v is not None})
        return out


def kernel_build(env: dict[str, Any], facts: KernelFacts) -> Build:
    """The checkout and build of one run's kernel, from its env record and FACTS."""
    image = env.get("kernel_image") or {}
    release = str(env.get("kernel") or "unknown")
    engine = str(image.get("engine") or "host")
    ident = {k: image[k] for k in ("build_id", "sha256") if image.get(k)}
    record = facts.build_record
    if record is not None:
        return _tree_build(record, facts, release, ident)
    arch = "um" if engine == "uml" else _arch(str(env.get("machine") or ""))
    # the image's own identity: its sha256, else the GNU build-id the kernel carries
    image_id = (f"image-{image['sha256'][:16]}" if image.get("sha256") else
                f"build-id-{image['build_id'][:16]}" if image.get("build_id") else
                f"version-{_arch(str(env.get('kernel_version') or 'unknown'))[:40]}")
    pkg = facts.package or _debian_package(env)
    if pkg is not None:
        where = f"Debian {pkg['suite']}" if pkg["suite"] else "Debian"
        checkout = Checkout(
            key=f"{pkg['name']}_{pkg['version']}", tree_name="debian",
            comment=f"{where}: {pkg['name']} {pkg['version']}",
            patchset_hash="",  # the package as Debian built it, nothing applied on top
            misc={"package": pkg["name"], "package_version": pkg["version"],
                  "release": release, **({"suite": pkg["suite"]} if pkg["suite"] else {})})
        return Build(key=f"{checkout.key}:{arch}:{image_id}", checkout=checkout,
                     architecture=arch, config_name="debian",
                     comment=f"Debian's {pkg['name']} {pkg['version']} ({release})",
                     status="PASS",  # Debian built it; it booted and ran the suite
                     misc={"release": release, **ident})
    # the host's kernel or an image given by path: its release and build are all there is
    checkout = Checkout(key=f"kernel_{release}", comment=f"kernel {release} "
                        f"({env.get('kernel_version', '?')})", misc={"release": release})
    return Build(key=f"{checkout.key}:{arch}:{image_id}", checkout=checkout,
                 architecture=arch, comment=f"kernel {release} ({engine})",
                 status="PASS",  # it booted and ran the suite
                 misc={"release": release, "kernel_version": str(env.get("kernel_version", "")),
                       **ident, **({"image": image["path"]} if image.get("path") else {})})


def _debian_package(env: dict[str, Any]) -> dict[str, str] | None:
    """Debian's own kernels say so in `uname -v` ("... Debian 6.1.192-3 (2026-07-04)"): the
    host's kernel is then the package linux-image-<release> of that version."""
    found = _UNAME_DEBIAN.search(str(env.get("kernel_version") or ""))
    if found is None or not env.get("kernel"):
        return None
    return {"suite": "", "name": f"linux-image-{env['kernel']}", "version": found.group(1)}


def _tree_build(record: dict[str, Any], facts: KernelFacts, release: str,
                ident: dict[str, str]) -> Build:
    """A tree of `nfsconf kernel build`: Debian's linux-source-X.Y plus a series."""
    pkg, version = str(record.get("source_package")), str(record.get("source_version"))
    series = [str(s) for s in record.get("series") or []]
    s_hash = str(record.get("series_sha256") or "")
    base = str(record.get("base") or "")
    patches = f" + {len(series)} patches ({record.get('series_path')})" if series else ""
    checkout = Checkout(
        key=f"{pkg}_{version}" + (f"+series-{s_hash[:16]}" if series else ""),
        tree_name="debian", comment=f"Debian {base.partition(':')[2] or base} {pkg} "
                                    f"{version}{patches}",
        patchset_hash=facts.patchset_hash,
        misc={"source_package": pkg, "source_version": version, "base": base,
              "series": series, "series_path": str(record.get("series_path") or ""),
              "series_sha256": s_hash})
    arch = ARCHES.get(str(record.get("arch")), _arch(str(record.get("arch"))))
    c_hash = str(record.get("config_sha256") or "")
    fragment = str(record.get("config_fragment") or "")
    # the command that made it, from the recipe the record names
    command = f"nfsconf kernel build --arch {record.get('arch')} --base {base}" + (
        f" --series {record.get('series_path')}" if series else "") + (
        f" --config {fragment}" if fragment else "")
    seconds = record.get("build_seconds")
    return Build(
        key=f"{checkout.key}:{arch}:config-{c_hash[:16]}", checkout=checkout,
        architecture=arch, comment=f"{release} built by nfsconf kernel build",
        config_name="nfsconf-guest" + (f"+{Path(fragment).name}" if fragment else ""),
        command=command,
        duration=float(seconds) if isinstance(seconds, int | float) else None,
        # the record is written only once make succeeded
        status="PASS", log_excerpt=_excerpt(facts.build_log, keep="tail"),
        misc={"release": release, "config_sha256": c_hash, "config_fragment": fragment,
              "jobs": record.get("jobs"), "nfsconf": record.get("nfsconf"),
              **({"tree": facts.tree} if facts.tree else {}), **ident})


def _arch(name: str) -> str:
    return _ARCH_UNSAFE.sub("_", name.lower()) or "unknown"


def path_component(text: str) -> str:
    """One component of a test path: the schema allows [a-zA-Z0-9_-], and a dot would
    split it in two (pynfs's `4.1` becomes `4_1`, a profile file's path loses its slashes)."""
    return _PATH_UNSAFE.sub("_", text) or "_"


def cell_path(r: Result) -> str:
    """nfsconf.<ID>[.<variant>].<profile>.<transport>: the scenario first, so a KCIDB
    dashboard groups a scenario's runs over every server and transport."""
    parts = [PATH_ROOT, r.id, r.variant, r.profile, r.transport]
    return ".".join(path_component(p) for p in parts if p)


def status_of(r: Result) -> str:
    """The KCIDB status of a cell. XFAIL (a failure an expectations file lists) has no
    status of its own in KCIDB, where known failures are issues triaged on the server: it
    is the verdict it was before the listing (FAIL or ERROR), the listing in misc."""
    verdict = r.verdict
    if verdict == "XFAIL":
        verdict = str((r.evidence.get("expectation") or {}).get("was") or "FAIL")
    if verdict not in STATUSES:
        raise ResultsError(f"{r.row} of {r.profile} [{r.transport}]: verdict {r.verdict!r} "
                           "has no KCIDB status")
    return STATUSES[verdict]


def log_excerpt(r: Result) -> str | None:
    """What explains the outcome: the oops block of a cell a kernel crash ended, the
    kernel's WARN/BUG lines that failed it, else the reason (none for a PASS)."""
    crash = r.evidence.get("kernel_crash") or {}
    if crash.get("lines"):
        return _excerpt("\n".join(str(x) for x in crash["lines"]) + "\n")
    warned = r.evidence.get("kernel_log") or []
    if warned:
        return _excerpt("\n".join([r.reason, *(str(x) for x in warned)]) + "\n")
    if r.verdict == "PASS" or not r.reason:
        return None
    return _excerpt(r.reason + (f" ({r.errno})" if r.errno and r.errno not in r.reason
                                else "") + "\n")


def _excerpt(text: str | None, keep: str = "head") -> str | None:
    """Within the schema's limit, without NULs; a build log keeps its end, where make says
    how it went, an oops its beginning, where the kernel says what went wrong."""
    if not text:
        return None
    text = text.replace("\0", "")
    if len(text) <= LOG_EXCERPT_MAX:
        return text
    return text[-LOG_EXCERPT_MAX:] if keep == "tail" else text[:LOG_EXCERPT_MAX]


def kcidb_test(r: Result, env: dict[str, Any], build_id: str, origin: str) -> dict[str, Any]:
    image = env.get("kernel_image") or {}
    started = str(env.get("started") or "")
    version = str((env.get("profiles") or {}).get(r.profile, ""))
    engine = str(image.get("engine") or "host")
    # a test run is this cell in this run: the same cell of a later run is another test
    out: dict[str, Any] = {
        "id": f"{build_id}:{started}:{r.row}:{r.profile}:{r.transport}",
        "origin": origin, "build_id": build_id, "path": cell_path(r), "status": status_of(r),
        "duration": float(r.duration),
        "comment": f"{r.row} ({r.level}) on {r.profile} [{r.transport}]",
        "environment": {
            "comment": f"FUSE server {r.profile} {version}".rstrip() + f" over {r.transport}"
                       f", kernel on {engine}",
            "misc": _drop_none({"fuse_server": r.profile, "fuse_server_version": version or None,
                                "transport": r.transport, "lane": env.get("transport"),
                                "engine": engine, "machine": env.get("machine"),
                                "kernel_cmdline": env.get("kernel_cmdline"),
                                "fuse_protocol": (env.get("fuse") or {}).get("protocol")})},
        "misc": _drop_none({
            "scenario": r.id, "variant": r.variant, "level": r.level, "verdict": r.verdict,
            "errno": r.errno, "wrong_object": r.wrong_object, "must": r.must,
            "claim": r.claim, "claimed": r.claimed if r.claim else None,
            "handle_type": (r.handle or {}).get("type"), "node": r.node or None,
            "expectation": r.evidence.get("expectation"),
            "kernel_crash": (r.evidence.get("kernel_crash") or {}).get("title"),
            "console": r.evidence.get("console"), "nfsconf": env.get("nfsconf")}),
    }
    if started:
        out["start_time"] = started  # results.jsonl has the run's start, not each cell's
    excerpt = log_excerpt(r)
    if excerpt is not None:
        out["log_excerpt"] = excerpt
    return out


def _drop_none(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if v is not None}


@dataclass(frozen=True)
class Part:
    """One run directory, read: its results and what is known of its kernel."""

    run: Run
    facts: KernelFacts = field(default_factory=KernelFacts)


def report(parts: list[Part], origin: str) -> dict[str, Any]:
    """The KCIDB report of PARTS (shards of one kernel, runs of several): every checkout and
    build once, however many runs share it, and a test per cell."""
    from kcidb_io.schema import LATEST

    check_origin(origin)
    checkouts: dict[str, dict[str, Any]] = {}
    builds: dict[str, dict[str, Any]] = {}
    tests: list[dict[str, Any]] = []
    for part in parts:
        build = kernel_build(part.run.env, part.facts)
        checkouts.setdefault(build.checkout.key, build.checkout.to_kcidb(origin))
        made = builds.setdefault(build.key, build.to_kcidb(origin))
        tests += [kcidb_test(r, part.run.env, made["id"], origin) for r in part.run.results]
    data: dict[str, Any] = LATEST.new()
    data["checkouts"] = list(checkouts.values())
    data["builds"] = list(builds.values())
    data["tests"] = sorted(tests, key=lambda t: t["id"])
    return data


def validate(data: dict[str, Any]) -> None:
    """Refuse to write what KCIDB would refuse: one line naming the first problem."""
    import jsonschema
    from kcidb_io.schema import LATEST

    try:
        LATEST.validate_exactly(data)
    except jsonschema.exceptions.ValidationError as e:
        where = "/".join(str(p) for p in e.absolute_path) or "(top)"
        raise ResultsError(f"the KCIDB report does not validate against schema {LATEST}: "
                           f"{where}: {e.message.splitlines()[0][:200]}") from None


def load_parts(dirs: list[str], expect: Expectations | None = None) -> list[Part]:
    """Each run directory under DIRS on its own (a test must point to its own run's build),
    with EXPECT (an Expectations) applied by each run's own kernel."""
    parts = []
    for d in (d for p in dirs for d in run_dirs(p)):
        run = load_run(d)
        if expect is not None:
            run = Run(run.path, run.envs, expect.apply(run.env.get("kernel", ""), run.results))
        parts.append(Part(run, gather(run.env)))
    return parts


def write(parts: list[Part], origin: str, out: Path) -> Path:
    data = report(parts, origin)
    validate(data)
    out.mkdir(parents=True, exist_ok=True)
    path = out / FILE
    path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    return path
