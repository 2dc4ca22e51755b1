"""./kit review: flagged submissions listed with their reasons and scores, cleared, or zeroed by a manual override
that a regrade does not undo; on the small class of test_grades_export (carol's a1 is flagged)."""
import shutil

import pytest
from test_grades_export import CARELESS, export, small_class

from helpers import grades_export, review


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    return small_class(tmp_path_factory.mktemp("class") / "course")


@pytest.fixture
def course_dir(template, tmp_path):
    return shutil.copytree(template, tmp_path / "course")


def gradebook_of(course):
    from nbgrader.api import Gradebook

    return Gradebook(f"sqlite:///{course / 'gradebook.db'}")


def test_the_list_gives_reasons_and_current_scores(course_dir, capsys):
    assert review.main([], course=course_dir) == 0
    out = capsys.readouterr().out
    assert out.startswith("1 flagged submission(s), held out of ./kit export-grades")
    assert "carol / a1: 10 / 10 (autograded 5, manual 5)" in out
    assert "    - the kernel answered with a subclass of Tensor\n" in out and "    - four\n" in out
    careless = next(line for line in out.splitlines() if "sys.modules" in line)
    assert "\x1b" not in careless and "\u202e" not in careless
    assert len(careless) < grades_export.REASON_CHARS + 10 < len(CARELESS)
    assert "alice" not in out and "--clear STUDENT ASSIGNMENT" in out


def test_a_flag_set_in_formgrader_is_listed_too(course_dir, capsys):
    with gradebook_of(course_dir) as gradebook:
        gradebook.find_submission_notebook("part2", "a2", "alice").flagged = True
        gradebook.db.commit()
    assert [(f.student, f.assignment) for f in review.flagged(course_dir)] == [("alice", "a2"), ("carol", "a1")]
    assert "no reason recorded" in str(review.flagged(course_dir)[0])


def test_clear_keeps_the_scores_and_releases_them_to_the_export(course_dir):
    assert export(course_dir)["carol"][1] == ""
    assert review.clear("carol", "a1", course=course_dir) == "carol / a1: flag cleared, scores kept (10 / 10)"
    assert review.flagged(course_dir) == []
    assert export(course_dir)["carol"][1:4] == ["10", "5", "5"]
    assert "carol / a1: flag cleared" in (course_dir / "reports" / "review.log").read_text()
    assert review.clear("carol", "a1", course=course_dir) == "carol / a1 is not flagged: nothing to clear"


def test_cleared_reasons_are_remembered_for_the_next_regrade(course_dir):
    import json

    from helpers import grading

    record = course_dir / "autograded" / "carol" / "a1" / "grading.json"
    flags = json.loads(record.read_text())["flags"]
    review.clear("carol", "a1", course=course_dir)
    assert grading._cleared(record) == set(flags) and flags  # a regrade flags these no more, a new reason again


def test_zero_overrides_the_autograded_scores_and_a_regrade_keeps_it(course_dir):
    import nbformat
    from nbgrader.preprocessors import SaveAutoGrades

    assert review.main(["--zero", "carol", "a1"], course=course_dir) == 0
    assert export(course_dir)["carol"][1:4] == ["5", "0", "5"]  # the written answer keeps its 5
    assert review.flagged(course_dir) == []
    assert "10 → 5 / 10" in (course_dir / "reports" / "review.log").read_text()
    # A regrade in which both test cells pass: nbgrader records the autograder's score beside the override.
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("", metadata={"nbgrader": {
        "grade": True, "solution": False, "locked": True, "grade_id": grade_id, "points": points}})
        for grade_id, points in (("test_f", 2), ("test_g", 3))])
    SaveAutoGrades().preprocess(nb, {"nbgrader": {"db_url": f"sqlite:///{course_dir / 'gradebook.db'}",
                                                  "assignment": "a1", "notebook": "a1", "student": "carol"}})
    with gradebook_of(course_dir) as gradebook:
        grade = gradebook.find_grade("test_g", "a1", "a1", "carol")
        assert (grade.auto_score, grade.manual_score, grade.score) == (3, 0, 0)
    rows = export(course_dir)
    assert rows["carol"][1] == "5" and rows["carol"][-2] == "a1"  # still 5, and shown for a grader's look


def test_an_unknown_submission_is_named(course_dir):
    with pytest.raises(SystemExit, match="no submission of a2 by carol"):
        review.zero("carol", "a2", course=course_dir)
    with pytest.raises(SystemExit, match="no submission of a1 by nobody"):
        review.clear("nobody", "a1", course=course_dir)


def test_nothing_flagged(course_dir, capsys):
    review.clear("carol", "a1", course=course_dir)
    review.main([], course=course_dir)
    assert capsys.readouterr().out.startswith("no flagged submissions")
