"""The table of `nfsconf kernel walk` (report/walk.py): each step against the last step
before it that ran; a step that did not apply or build is its own row and compares nothing."""

from hypothesis import given
from hypothesis import strategies as st

from nfsconf.report.results import Result
from nfsconf.report.walk import ABSENT, StepRow, changes, compare, markdown, terminal


def res(sid: str, verdict: str, errno: str | None = None, variant: str = "file",
        transport: str = "local") -> Result:
    return Result(sid, variant, "MUST", "ref-lh", transport, verdict, errno=errno)


def test_a_changed_verdict_and_errno_are_changes_the_same_cell_is_not():
    before = [res("DEC-COLD", "FAIL", "ESTALE"), res("LH-ENC", "PASS"), res("GONE", "PASS")]
    after = [res("DEC-COLD", "PASS"), res("LH-ENC", "PASS"), res("NEW", "FAIL", "EIO")]
    got = {c.cell: (c.before, c.after) for c in changes(before, after)}
    assert got == {"DEC-COLD/file ref-lh [local]": ("FAIL ESTALE", "PASS"),
                   "NEW/file ref-lh [local]": (ABSENT, "FAIL EIO"),
                   "GONE/file ref-lh [local]": ("PASS", ABSENT)}


def test_steps_compare_with_the_last_step_that_ran():
    rows = [StepRow(0, "(base)", "7.2", run="r0", results=[res("A", "PASS")]),
            StepRow(1, "0001-x.patch", error="does not apply:\n  error: patch failed"),
            StepRow(2, "0002-y.patch", "7.2-y", run="r2", results=[res("A", "FAIL", "EIO")]),
            StepRow(3, "0003-z.patch", error="does not build: make failed")]
    compare(rows)
    assert rows[0].changes == [] and rows[1].changes == []
    assert [(c.before, c.after) for c in rows[2].changes] == [("PASS", "FAIL EIO")]
    text = terminal(rows)
    assert "does not apply:" in text and "A/file ref-lh [local]: PASS -> FAIL EIO" in text
    md = markdown(rows)
    assert "error: patch failed" in md and "## Step 3: 0003-z.patch" in md


@given(st.lists(st.tuples(st.sampled_from("ABCDE"), st.sampled_from(["PASS", "FAIL", "SKIP"])),
                unique_by=lambda t: t[0]),
       st.lists(st.tuples(st.sampled_from("ABCDE"), st.sampled_from(["PASS", "FAIL", "SKIP"])),
                unique_by=lambda t: t[0]))
def test_changes_are_exactly_the_cells_that_differ(old, new):
    before = [res(s, v) for s, v in old]
    after = [res(s, v) for s, v in new]
    got = {c.cell.split("/")[0] for c in changes(before, after)}
    assert got == {s for s in "ABCDE" if dict(old).get(s) != dict(new).get(s)}
    assert changes(after, after) == []
