"""Grading a class is never stopped by one bad submission, and feedback never shows hidden tests."""
import html as html_module
import re
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from helpers import course
from helpers.report import question_scores, question_table, write_report

ROOT = Path(__file__).resolve().parents[1]
ASSIGNMENT = "01_pca_autoencoders"
NOTEBOOK = f"{ASSIGNMENT}.ipynb"


def html_to_text(page: str) -> str:
    """The text a reader sees: code in feedback HTML is split into one <span> per token."""
    return html_module.unescape(re.sub(r"<[^>]+>", "", page))


def cell(nb, grade_id):
    return next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id)


def syntax_error(nb):
    cell(nb, "standardize").source = "def standardize(X):\n    return (X -\n"


def endless_loop(nb):
    nb.cells.insert(2, nbformat.v4.new_code_cell("while True:\n    pass"))


def deleted_test_cell(nb):
    nb.cells.remove(cell(nb, "test_pca"))


def edited_test_cell(nb):
    cell(nb, "test_pca_penguins").source = "print('all good, trust me')"


def exception_everywhere(nb):
    for c in nb.cells:
        if c.cell_type == "code":
            c.source = "raise RuntimeError('boom')"


def fails_hidden_test_only(nb):
    # Right for the visible check's 4 columns, wrong for the hidden tests' other shapes.
    cell(nb, "standardize").source = (
        "def standardize(X):\n"
        "    if X.shape[1] != 4:\n"
        "        return X\n"
        "    return (X - X.mean(0)) / X.std(0, correction=0)\n")


BAD = {"syntax-error": syntax_error, "endless-loop": endless_loop, "deleted-test-cell": deleted_test_cell,
       "edited-test-cell": edited_test_cell, "exception-everywhere": exception_everywhere,
       "hidden-test-failure": fails_hidden_test_only}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    copy = course.course_copy(tmp_path_factory.mktemp("class"), [ASSIGNMENT])
    course.add_sample_class(copy)
    solved = copy / "submitted" / "sample-solution" / ASSIGNMENT / NOTEBOOK
    for student, spoil in BAD.items():
        nb = nbformat.read(solved, as_version=4)
        spoil(nb)
        folder = copy / "submitted" / student / ASSIGNMENT
        folder.mkdir(parents=True)
        nbformat.write(nb, folder / NOTEBOOK)
    corrupt = copy / "submitted" / "corrupt-notebook" / ASSIGNMENT
    corrupt.mkdir(parents=True)
    (corrupt / NOTEBOOK).write_text(solved.read_text()[:5000])  # cut off mid-file
    csv, outcome = course.grade(copy, timeout=60)
    grades = pd.read_csv(csv).set_index("student_id")
    return copy, grades, course.needs_a_look(outcome)


def score(grades, student):
    return grades.loc[student, "score"]


def test_every_student_gets_a_row(graded):
    _, grades, _ = graded
    assert set(grades.index) == {"sample-solution", "sample-blank", "corrupt-notebook", *BAD}


def test_scores_of_the_bad_submissions(graded):
    _, grades, _ = graded
    full = score(grades, "sample-solution")
    assert full > 0 and score(grades, "sample-blank") == 0
    assert score(grades, "exception-everywhere") == 0
    assert score(grades, "corrupt-notebook") == 0
    assert 0 < score(grades, "syntax-error") < full          # only what depends on standardize is lost
    assert score(grades, "endless-loop") == full               # the stuck cell is stopped, the rest graded
    assert score(grades, "deleted-test-cell") == full          # the test cell is put back and run
    assert score(grades, "edited-test-cell") == full           # the original test runs, not the edit
    assert score(grades, "hidden-test-failure") == full - 2    # test_standardize is worth 2


def test_problems_are_reported(graded):
    _, _, problems = graded
    text = "\n".join(problems)
    assert "corrupt-notebook" in text and "not a readable notebook" in text
    assert "endless-loop" in text and "time limit" in text


def test_feedback_shows_the_message_not_the_hidden_test(graded):
    copy, _, _ = graded
    html = next((copy / "feedback" / "hidden-test-failure" / ASSIGNMENT).glob("*.html")).read_text()
    text = html_to_text(html)
    assert "should have mean 0" in text                 # the checker's explanation reaches the student
    assert "seed=11" not in text and "n=7, d=3" not in text  # the hidden test's code does not
    assert "BEGIN HIDDEN TESTS" not in text
    instructor_copy = (copy / "autograded" / "hidden-test-failure" / ASSIGNMENT / NOTEBOOK).read_text()
    assert "seed=11" in instructor_copy                 # graders still see the hidden tests


def test_report_tables_and_plot(graded):
    copy, _, problems = graded
    table = question_table(question_scores(copy))
    row = table.loc[(ASSIGNMENT, "test_standardize")]
    assert row["max_points"] == 2 and row["max"] == 2 and row["min"] == 0
    # blank, syntax error, exception everywhere and the hidden-test failure lose these points
    assert row["lost_points"] == 4
    report = write_report(copy, copy / "grades.csv", problems)
    assert "test_standardize" in report.read_text() and "corrupt-notebook" in report.read_text()
    assert (copy / "reports" / "scores.png").read_bytes()[:4] == b"\x89PNG"


def test_regrading_keeps_what_was_graded(graded):
    copy, grades, _ = graded
    csv, _ = course.grade(copy, timeout=60)  # only the sample students run again
    again = pd.read_csv(csv).set_index("student_id")
    assert again["score"].to_dict() == grades["score"].to_dict()
    assert (copy / "submitted" / "syntax-error" / ASSIGNMENT / NOTEBOOK).exists()
