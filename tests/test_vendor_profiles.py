"""A vendor's server certified for FUSE_LOOKUP_HANDLE: nfsconf's reference server run from a
TOML profile (tests/data/profiles) like any other server, so the level-5 scenarios can only
judge it from what the kernel shows. On the host (no LOOKUP_HANDLE) its level-5 cells SKIP
with the kernel's reason; on the RFC v2 series (User-Mode Linux, built and cached) it
negotiates (fid 0x91) and a profile that claims LOOKUP_HANDLE but does not deliver FAILs.
There the vendor profile is also restarted without unmount by its own [restart] commands
(levels 4 and 5), checked from the kernel; a profile without them SKIPs those cells."""

import json
from pathlib import Path

import pytest
from nfsconf_cli import AS_ROOT, SHARED, build_uml_kernel, nfsconf

PROFILES = Path(__file__).resolve().parent / "data" / "profiles"
HONEST = str(PROFILES / "vendor-lh.toml")
LIAR = str(PROFILES / "vendor-lh-liar.toml")
VOLATILE = str(PROFILES / "vendor-lh-volatile.toml")
SERIES = SHARED / "kernels" / "lookup-handle-v2"
# the suite's fixes of the series' kernel defects: the kernel the issue certifies on
FIXES = Path(__file__).resolve().parent / "data" / "lookup-handle-v2-fixes"


def _results(out: Path) -> dict[tuple[str, str, str, str], dict]:
    lines = (out / "results.jsonl").read_text().splitlines()[1:]
    return {(r["profile"], r["id"], r["variant"], r["transport"]): r
            for r in map(json.loads, lines)}


@AS_ROOT
def test_vendor_profiles_on_the_host_skip_level_5(tmp_path):
    out = tmp_path / "run"
    r = nfsconf("run", "--profile", HONEST, "--profile", LIAR, "-k",
                "(DEC-COLD and file) or LH-ENC or (LH-RESTART and file and not clients)",
                "--out", str(out))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    cells = _results(out)
    for profile in ("vendor-lh", "vendor-lh-liar"):
        # the server runs from its command line and keeps its nodeids
        cold = cells[(profile, "DEC-COLD", "file", "local")]
        assert cold["verdict"] == "PASS" and "trace_tail" not in cold["evidence"], cold
        lh = [c for (p, sid, _, _), c in cells.items() if p == profile and sid.startswith("LH-")]
        assert {c["id"] for c in lh} == {"LH-ENC", "LH-RESTART"}
        for c in lh:  # the kernel's reason, before any mount: a claim is not broken here
            assert c["verdict"] == "SKIP" and "LOOKUP_HANDLE not negotiated" in c["reason"] \
                and "server_pid" not in c["evidence"], c
    r = nfsconf("certify", "--results", str(out), "--profile", HONEST)
    assert r.returncode == 0, r.stderr
    (cert,) = json.loads((out / "certificate.json").read_text())
    five = cert["levels"][5]
    assert not five["earned"] and {"cell": "all SKIP", "scenario": "LH-ENC,LH-RESTART",
                                   "reason": "nothing of it could be run"} in five["blocking"]


@pytest.fixture(scope="module")
def lh_tree():
    return build_uml_kernel(SERIES / "series", FIXES)


@pytest.mark.vm
@AS_ROOT
def test_vendor_profiles_on_the_lookup_handle_kernel(lh_tree, tmp_path):
    out = tmp_path / "run"
    r = nfsconf("run", "--transport", "knfsd", "--kernel", str(lh_tree), "--profile", HONEST,
                "--profile", VOLATILE, "-k", "LH-ENC or (LH-RESTART and file and not clients) "
                "or (LIVE-RESTART-SAFE and file) or IN-FLIGHT",
                "--out", str(out), "--vm-timeout", "900", timeout=1800)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    cells = _results(out)
    for kind in ("file", "dir"):  # negotiated, seen in the fid alone: no trace of this server
        enc = cells[("vendor-lh", "LH-ENC", kind, "local")]
        assert enc["verdict"] == "PASS" and enc["handle"]["type"] == "0x91", enc
        assert enc["evidence"]["lookup_handle"]["fid_type"] == "0x91", enc["evidence"]
        assert "trace_tail" not in enc["evidence"]
    for transport in ("local", "knfsd"):
        # a remount keeps the honest server's handles, not the per-instance ones
        assert cells[("vendor-lh", "LH-RESTART", "file-remount", transport)]["verdict"] \
            == "PASS"
        lie = cells[("vendor-lh-volatile", "LH-RESTART", "file-remount", transport)]
        assert lie["verdict"] == "FAIL" and lie["claimed"], lie
        for how, key in (("handover", "handover"), ("sigkill", "takeover")):
            # restarted in place by its profile's command, as the kernel showed it: the
            # same mount and connection, another process serving, the handles still good
            for sid in ("LH-RESTART", "LIVE-RESTART-SAFE"):
                live = cells[("vendor-lh", sid, f"file-{how}", transport)]
                assert live["verdict"] == "PASS", live
                (done,) = live["evidence"]["restarts"]
                assert done["how"] == how and done["new_pid"] != done["old_pid"], done
                assert done["stopped_lookup_waited"] >= 0.05, done  # the least hold
            flight = cells[("vendor-lh", "IN-FLIGHT", how, transport)]
            assert flight["verdict"] == "PASS", flight
            assert flight["evidence"]["reader"]["data"].startswith("nfsconf "), flight
            # a server whose profile has no [restart] is not restarted in place: SKIP, why
            skip = cells[("vendor-lh-volatile", "LH-RESTART", f"file-{how}", transport)]
            assert skip["verdict"] == "SKIP" and \
                f"declares no restart.{key} command" in skip["reason"], skip
            for sid, variant in (("LIVE-RESTART-SAFE", f"file-{how}"), ("IN-FLIGHT", how)):
                skip = cells[("vendor-lh-volatile", sid, variant, transport)]
                assert skip["verdict"] == "SKIP" and "declares no [restart] command" in \
                    skip["reason"] and "restarts" not in skip["evidence"], skip
