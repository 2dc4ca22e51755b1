"""Grades out of the gradebook in the shapes Canvas, Moodle and a spreadsheet import: flagged submissions held
out, one column per question on request, late penalties with extensions; on a small class with known answers."""
import csv
import json
import os
import shutil
import sys
import warnings
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from helpers import grades_export

DUE = datetime(2025, 3, 1, 23, 59)
ROSTER = """student_id,name,email,lms_id,username,extension
alice,Alice Liddell,alice@example.org,2001,aliddell,
bob,Bob Brown,bob@example.org,2002,bbrown,1
dave,Dave Dee,dave@example.org,2004,ddee,a2=3
"""
LATE_POLICY = "c.LatePolicy.penalty_per_day = 0.1\nc.LatePolicy.cap = 0.25\n"
CARELESS = "reaches sys.modules\x1b[2J to patch the \u202echecker " + "x" * 500


def small_class(folder):
    """A gradebook as nbgrader records it, with known answers:

    a1 (due DUE; test_f 2 and test_g 3 points autograded, written 5 by hand; 10 in all), a2 (no due date;
    two notebooks, part1/test_h 4 and part2/test_k 1).
    - alice: a1 on time, 2 + 3 + 4 = 9; a2 4 + 1 = 5.
    - bob: a1 34 h late, 1 day of extension: 1 started day late; 2 + 0, written not graded yet: 2.
    - carol: a1 flagged by grading (grading.json gives the reasons), 2 + 3 + 5 = 10.
    - dave: a1 3 days 8 hours late (timestamp.txt only, not in the gradebook): 4 started days; 10.
    - erin: enrolled, handed nothing in.
    """
    from nbgrader.api import Gradebook

    tools = str(Path(sys.executable).parent)  # nbgrader runs `alembic` through PATH to create a gradebook
    if tools not in os.environ["PATH"].split(os.pathsep):
        os.environ["PATH"] = tools + os.pathsep + os.environ["PATH"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "nbgrader_config.py").write_text("c = get_config()\n")
    (folder / "students.csv").write_text(ROSTER)
    with Gradebook(f"sqlite:///{folder / 'gradebook.db'}") as gradebook, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SQLAlchemy's about nbgrader's own session handling: harmless, noisy
        gradebook.add_assignment("a1", duedate=DUE)
        gradebook.add_notebook("a1", "a1")
        gradebook.add_grade_cell("written", "a1", "a1", max_score=5, cell_type="markdown")
        gradebook.add_grade_cell("test_g", "a1", "a1", max_score=3, cell_type="code")
        gradebook.add_grade_cell("test_f", "a1", "a1", max_score=2, cell_type="code")
        gradebook.add_assignment("a2")
        for notebook, cell, points in (("part1", "test_h", 4), ("part2", "test_k", 1)):
            gradebook.add_notebook(notebook, "a2")
            gradebook.add_grade_cell(cell, notebook, "a2", max_score=points, cell_type="code")
        for student in ("alice", "bob", "carol", "dave", "erin"):
            gradebook.add_student(student)

        def submit(student, assignment, scores, **kwargs):
            gradebook.add_submission(assignment, student, **kwargs)
            for (notebook, cell), score in scores.items():
                grade = gradebook.find_grade(cell, notebook, assignment, student)
                if cell.startswith("test_"):
                    grade.auto_score = score
                else:
                    grade.manual_score = score
                grade.needs_manual_grade = score is None
            gradebook.db.commit()

        def a1(f, g, written):
            return {("a1", "test_f"): f, ("a1", "test_g"): g, ("a1", "written"): written}

        submit("alice", "a1", a1(2, 3, 4), timestamp=datetime(2025, 3, 1, 12, 0))
        submit("alice", "a2", {("part1", "test_h"): 4, ("part2", "test_k"): 1}, timestamp=datetime(2025, 3, 9))
        submit("bob", "a1", a1(2, 0, None), timestamp=DUE + timedelta(hours=34))
        submit("carol", "a1", a1(2, 3, 5), timestamp=datetime(2025, 3, 1, 9, 0))
        submit("dave", "a1", a1(2, 3, 5))
        gradebook.find_submission_notebook("a1", "a1", "carol").flagged = True
        gradebook.db.commit()
    stamp = folder / "submitted" / "dave" / "a1" / "timestamp.txt"
    stamp.parent.mkdir(parents=True)
    stamp.write_text((DUE + timedelta(days=3, hours=8)).strftime("%Y-%m-%d %H:%M:%S"))
    graded = folder / "autograded" / "carol" / "a1"
    graded.mkdir(parents=True)
    (graded / "grading.json").write_text(json.dumps({"flags": ["the kernel answered with a subclass of Tensor",
                                                               CARELESS, "three", "four"], "verdicts": {}}))
    return folder


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    return small_class(tmp_path_factory.mktemp("class") / "course")


@pytest.fixture
def course_dir(template, tmp_path):
    """A fresh copy of the small class (creating a gradebook takes nbgrader seconds: once per module)."""
    return shutil.copytree(template, tmp_path / "course")


@pytest.fixture
def late_course(course_dir):
    (course_dir / "nbgrader_config.py").write_text("c = get_config()\n" + LATE_POLICY)
    return course_dir


def read(path):
    with open(path, newline="") as handle:
        return {row[0]: row for row in csv.reader(handle)}


def export(course, fmt="csv", **kwargs):
    target = course / f"{fmt}.csv"
    return read(grades_export.export(fmt, target, course=course, roster=course / "students.csv", **kwargs))


def test_csv_has_totals_with_autograded_and_manual_parts(course_dir):
    rows = export(course_dir)
    assert rows["student_id"] == ["student_id", "a1", "a1 autograded", "a1 manual", "a2", "a2 autograded", "a2 manual",
                                  "needs manual grading", "notes"]
    assert rows["alice"] == ["alice", "9", "5", "4", "5", "5", "0", "", ""]
    assert rows["bob"][1:4] == ["2", "2", "0"] and rows["bob"][-2] == "a1"  # the written answer waits for a grader
    assert rows["erin"] == ["erin", "", "", "", "", "", "", "", ""]  # empty, not a zero the LMS would record


def test_canvas_import_file(course_dir):
    rows = export(course_dir, "canvas")
    assert rows["Student"] == ["Student", "ID", "SIS User ID", "SIS Login ID", "Section", "a1", "a2"]
    assert rows["Points Possible"] == ["Points Possible", "", "", "", "", "10", "5"]
    assert rows["Alice Liddell"] == ["Alice Liddell", "2001", "alice", "aliddell", "", "9", "5"]
    assert rows["erin"] == ["erin", "", "erin", "", "", "", ""]  # not in students.csv: matched by SIS User ID


def test_moodle_import_file(course_dir):
    rows = export(course_dir, "moodle")
    assert rows["ID number"] == ["ID number", "Email address", "a1", "a1 autograded", "a1 manual",
                                 "a2", "a2 autograded", "a2 manual", "Notes"]
    assert rows["alice"] == ["alice", "alice@example.org", "9", "5", "4", "5", "5", "0", ""]


def test_flagged_scores_are_held_out_with_the_reasons_in_every_format(course_dir):
    for fmt in ("csv", "moodle"):
        carol = export(course_dir, fmt)["carol"]
        assert carol[2:8] == [""] * 6, fmt  # a1's cells and a2 (never handed in) all empty
        note = carol[-1]
        assert note.startswith("a1: held out, flagged — the kernel answered with a subclass of Tensor; "
                               "reaches sys.modules")
        assert "\x1b" not in note and "\u202e" not in note and "x" * 300 not in note
        assert "(+1 more)" in note and "./kit review" in note
    assert export(course_dir, "canvas")["carol"][5:] == ["", ""]


def test_the_summary_says_how_many_were_held_and_why(course_dir, capsys):
    assert grades_export.main(["--format", "canvas", "--out", str(course_dir / "c.csv")], course=course_dir) == 0
    out, err = capsys.readouterr()
    assert "held out 1 flagged submission(s)" in err and "./kit review" in err
    assert "carol / a1: the kernel answered with a subclass of Tensor" in err  # no notes column in Canvas's file
    assert "wrote" in out and "held out" not in out
    grades_export.main(["--format", "csv", "--out", str(course_dir / "g.csv")], course=course_dir)
    assert "held out 1 flagged submission(s)" in capsys.readouterr().out


def test_a_flag_without_grading_json_still_holds_and_says_so(course_dir):
    (course_dir / "autograded" / "carol" / "a1" / "grading.json").unlink()
    assert "no reason recorded" in export(course_dir)["carol"][-1]
    (course_dir / "autograded" / "carol" / "a1" / "grading.json").write_text("{not json")
    assert "could not be read" in export(course_dir)["carol"][-1]


def test_per_question_columns_for_every_graded_cell(course_dir):
    rows = export(course_dir, per_question=True)
    a1 = ["a1", "a1 autograded", "a1 manual", "a1: test_f", "a1: test_g", "a1: written"]  # no release: by name
    a2 = ["a2", "a2 autograded", "a2 manual", "a2: part1/test_h", "a2: part2/test_k"]
    assert rows["student_id"] == ["student_id", *a1, *a2, "needs manual grading", "notes"]
    assert rows["alice"][1:12] == ["9", "5", "4", "2", "3", "4", "5", "5", "0", "4", "1"]
    assert rows["bob"][4:7] == ["2", "0", "0"]  # a written answer not graded yet scores 0 in the gradebook too
    assert rows["carol"][1:12] == [""] * 11  # held out, every column
    canvas = export(course_dir, "canvas", per_question=True)
    assert canvas["Student"][5:] == ["a1", "a1: test_f", "a1: test_g", "a1: written", "a2", "a2: part1/test_h",
                                     "a2: part2/test_k"]
    assert canvas["Points Possible"][5:] == ["10", "2", "3", "5", "5", "4", "1"]
    assert canvas["Alice Liddell"][5:] == ["9", "2", "3", "4", "5", "4", "1"]


def test_per_question_columns_follow_the_release_order(course_dir):
    import nbformat

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(metadata={"nbgrader": {"grade_id": grade_id}})
                                         for grade_id in ("test_g", "written", "test_f")])
    (course_dir / "notebooks" / "a1").mkdir(parents=True)
    nbformat.write(nb, course_dir / "notebooks" / "a1" / "a1.ipynb")
    assert export(course_dir, per_question=True)["student_id"][4:7] == ["a1: test_g", "a1: written", "a1: test_f"]


def test_late_work_is_noted_without_a_penalty_when_the_policy_is_none(course_dir):
    rows = export(course_dir)
    assert rows["bob"][1] == "2"
    assert rows["bob"][-1] == ("a1: 1 day late (handed in 2025-03-03 09:59, due 2025-03-02 23:59 "
                               "with the extension 1): no penalty")
    assert rows["dave"][1] == "10" and rows["dave"][-1].startswith("a1: 4 days late")
    assert rows["alice"][-1] == ""  # on time


def test_late_penalty_per_started_day_with_a_cap_and_extensions(late_course, capsys):
    rows = export(late_course)
    assert rows["bob"][1:4] == ["1", "2", "0"]  # 1 day: −10 % of 10; the parts stay raw
    assert rows["bob"][-1].endswith("−10% of the maximum, −1 points")
    assert rows["dave"][1:4] == ["7.5", "5", "5"]  # 4 days: 40 %, capped at 25 %
    assert rows["dave"][-1] == ("a1: 4 days late (handed in 2025-03-05 07:59, due 2025-03-01 23:59): "
                                "−25% of the maximum, −2.5 points")  # "a2=3" extends a2 only
    assert rows["alice"][1] == "9"
    assert export(late_course, "canvas")["Bob Brown"][5] == "1"
    assert classroom_total(late_course, "bob") == 2  # the gradebook keeps the raw score
    grades_export.main(["--out", str(late_course / "g.csv")], course=late_course)
    out = capsys.readouterr().out
    assert "late: 2 submission(s) (10% of the maximum per started day late, at most 25%)" in out
    assert "no due date in the gradebook for a2" in out  # alice's a2 has a hand-in time, a2 no due date


def test_an_extension_to_a_new_due_date(late_course):
    roster = late_course / "students.csv"
    roster.write_text(ROSTER.replace("ddee,a2=3", "ddee,a1=2025-03-05; 3"))
    rows = export(late_course)
    assert rows["dave"][1] == "10" and rows["dave"][-1] == ""  # due at the end of 5 March: on time
    roster.write_text(ROSTER.replace("ddee,a2=3", "ddee,a1=2025-02-01"))
    assert rows != export(late_course) and export(late_course)["dave"][1] == "7.5"  # never earlier than due


def test_a_penalty_never_takes_more_than_the_score(late_course):
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{late_course / 'gradebook.db'}") as gradebook:
        gradebook.find_grade("test_f", "a1", "a1", "bob").auto_score = 0.5
        gradebook.find_grade("test_f", "a1", "a1", "bob").manual_score = 0.5
        gradebook.db.commit()
    assert export(late_course)["bob"][1] == "0"


def classroom_total(course, student, assignment="a1"):
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gradebook:
        return gradebook.find_submission(assignment, student).score


@pytest.mark.parametrize("text, expected", [
    ("", None),
    ("3", timedelta(days=3)),
    ("1.5 days", timedelta(days=1.5)),
    ("2025-03-05 12:00", datetime(2025, 3, 5, 12, 0)),
    ("2025-03-05", datetime(2025, 3, 5, 23, 59, 59)),
    ("a2=3", None),
    ("a1=2; 5", timedelta(days=2)),
    ("5; a1=2", timedelta(days=2)),
    ("a2=1; 4", timedelta(days=4)),
])
def test_extension_cells(text, expected):
    assert grades_export.extension(text, "a1") == expected


@pytest.mark.parametrize("text", ["soon", "-2", "a1=next week", "2025-13-45"])
def test_an_unreadable_extension_is_refused_with_the_student_named(text):
    with pytest.raises(SystemExit, match="students.csv, bob: extension .* neither a number of days"):
        grades_export.extension(text, "a1", where="students.csv, bob")


def test_the_late_policy_is_checked(course_dir):
    from traitlets import TraitError

    (course_dir / "nbgrader_config.py").write_text("c = get_config()\nc.LatePolicy.penalty_per_day = 5\n")
    with pytest.raises(TraitError):
        grades_export.late_policy(course_dir)


def test_unknown_format_is_refused(course_dir):
    with pytest.raises(ValueError, match="canvas, moodle, csv"):
        grades_export.export("xlsx", course_dir / "x", course=course_dir)
    assert not (course_dir / "x").exists()
