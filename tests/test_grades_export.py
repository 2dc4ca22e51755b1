"""Grades out of the gradebook in the shapes Canvas, Moodle and a spreadsheet import."""
import csv
import shutil

import pytest
from classroom import ASSIGNMENT

from helpers import grades_export

ROSTER = "student_id,name,email,lms_id,username\nalice,Alice Liddell,alice@example.org,2001,aliddell\n"


def grade_by_hand(course_dir, student, score, cell="written_pca"):
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course_dir / 'gradebook.db'}") as gradebook:
        grade = gradebook.find_grade(cell, ASSIGNMENT, ASSIGNMENT, student)
        grade.manual_score = score
        grade.needs_manual_grade = False  # what formgrader records when a grader enters a score
        gradebook.db.commit()


@pytest.fixture
def graded(hub_course, tmp_path):
    course_dir = shutil.copytree(hub_course[0], tmp_path / "course")
    (course_dir / "students.csv").write_text(ROSTER)
    return course_dir


def read(path):
    with open(path, newline="") as handle:
        return list(csv.reader(handle))


def test_csv_has_totals_with_autograded_and_manual_parts(graded, tmp_path):
    before = read(grades_export.export("csv", tmp_path / "before.csv", course=graded))
    assert before[0] == ["student_id", ASSIGNMENT, f"{ASSIGNMENT} autograded", f"{ASSIGNMENT} manual", "needs manual grading"]
    assert before[1] == ["alice", "2", "2", "0", ASSIGNMENT]  # the written answer waits for a grader
    grade_by_hand(graded, "alice", 1.5)
    rows = read(grades_export.export("csv", tmp_path / "grades.csv", course=graded))
    assert rows[1] == ["alice", "3.5", "2", "1.5", ""]
    assert rows[2][:4] == ["bob", "0", "0", "0"]


def test_canvas_import_file(graded, tmp_path):
    grade_by_hand(graded, "alice", 2)
    rows = read(grades_export.export("canvas", tmp_path / "canvas.csv", course=graded, roster=graded / "students.csv"))
    assert rows[0] == ["Student", "ID", "SIS User ID", "SIS Login ID", "Section", ASSIGNMENT]
    assert rows[1] == ["Points Possible", "", "", "", "", "4"]
    assert rows[2] == ["Alice Liddell", "2001", "alice", "aliddell", "", "4"]
    assert rows[3] == ["bob", "", "bob", "", "", "0"]  # not in students.csv: matched by SIS User ID


def test_moodle_import_file_and_students_without_submission(graded, tmp_path):
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{graded / 'gradebook.db'}") as gradebook:
        gradebook.add_student("carol")  # enrolled, handed nothing in
    rows = read(grades_export.export("moodle", tmp_path / "moodle.csv", course=graded, roster=graded / "students.csv"))
    assert rows[0] == ["ID number", "Email address", ASSIGNMENT, f"{ASSIGNMENT} autograded", f"{ASSIGNMENT} manual"]
    assert rows[1] == ["alice", "alice@example.org", "2", "2", "0"]
    assert rows[3] == ["carol", "", "", "", ""]  # empty, not a zero the LMS would record


def test_unknown_format_is_refused(graded, tmp_path):
    with pytest.raises(ValueError, match="canvas, moodle, csv"):
        grades_export.export("xlsx", tmp_path / "x", course=graded)
