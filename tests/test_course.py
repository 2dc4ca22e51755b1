"""nbgrader round trip on a temporary copy of the course, and the committed release kept in sync."""
import json
import shutil
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from helpers import course, handin
from pdf_text import letters, pdf_text_and_images, plain_phrase

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def graded_class(tmp_path_factory):
    """A copy of the course, released and graded with the sample class, in the grade budget."""
    copy = course.course_copy(tmp_path_factory.mktemp("course"), course.assignments())
    course.add_sample_class(copy)
    csv, _ = course.grade(copy)
    return copy, pd.read_csv(csv)


def autograded_points(assignment: str) -> float:
    total = 0
    for nb_path in (ROOT / "solutions" / assignment).glob("*.ipynb"):
        for cell in nbformat.read(nb_path, as_version=4).cells:
            meta = cell.metadata.get("nbgrader", {})
            if meta.get("grade") and not meta.get("solution") and cell.cell_type == "code":
                total += meta["points"]
    return total


@pytest.mark.parametrize("assignment", course.assignments())
def test_solution_earns_every_autograded_point_and_blank_none(graded_class, assignment):
    _, grades = graded_class
    rows = grades[grades.assignment == assignment].set_index("student_id")
    assert rows.loc["sample-solution", "score"] == pytest.approx(autograded_points(assignment))
    assert rows.loc["sample-blank", "score"] == 0


@pytest.mark.parametrize("assignment", course.assignments())
def test_release_hides_solutions_and_hidden_tests(graded_class, assignment):
    copy, _ = graded_class
    source = nbformat.read(next((ROOT / "solutions" / assignment).glob("*.ipynb")), as_version=4)
    released_text = "".join(p.read_text() for p in (copy / "notebooks" / assignment).glob("*.ipynb"))
    for marker in ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "Model answer", "Rubric"):
        assert marker not in released_text
    for cell in source.cells:
        meta = cell.metadata.get("nbgrader", {})
        inside = False
        for line in cell.source.splitlines():
            if "### BEGIN" in line:
                inside = True
            elif "### END" in line:
                inside = False
            elif inside and len(line.strip()) > 25:  # any substantial solution or hidden-test line
                assert json.dumps(line.strip())[1:-1] not in released_text, line
        if meta.get("solution") and cell.cell_type == "markdown":
            assert cell.source.splitlines()[0] not in released_text


def test_feedback_written_for_every_student(graded_class):
    copy, grades = graded_class
    for student, assignment in grades[["student_id", "assignment"]].itertuples(index=False):
        assert list((copy / "feedback" / student / assignment).glob("*.html")), (student, assignment)


def test_grading_again_brings_marks_given_since_into_the_feedback(graded_class, monkeypatch):
    """An instructor marks a written answer in the formgrader, then runs the grading again: nothing is
    re-executed, and the student's feedback shows the new mark."""
    from nbgrader.api import Gradebook

    monkeypatch.setattr(course, "SAMPLE_STUDENTS", ())  # as for real students: graded once, kept
    copy, _ = graded_class
    assignment = course.assignments()[0]
    source = nbformat.read(next((ROOT / "solutions" / assignment).glob("*.ipynb")), as_version=4)
    written = next(c.metadata.nbgrader for c in source.cells
                   if c.cell_type == "markdown" and c.metadata.get("nbgrader", {}).get("grade"))
    notebook = next((ROOT / "solutions" / assignment).glob("*.ipynb")).stem
    with Gradebook(f"sqlite:///{copy / 'gradebook.db'}") as gradebook:
        grade = gradebook.find_grade(written["grade_id"], notebook, assignment, "sample-solution")
        grade.manual_score = written["points"]
        gradebook.db.commit()
        total = gradebook.find_submission_notebook(notebook, assignment, "sample-solution").score
    _, outcome = course.grade(copy)
    assert not outcome.timings and not outcome.problems
    html = next((copy / "feedback" / "sample-solution" / assignment).glob("*.html")).read_text()
    assert f"(Score: {round(float(total), 2)} / " in html, total


def test_committed_release_is_in_sync_with_solutions():
    problems = course.stale_release()
    assert not problems, "notebooks/ is stale; run `./kit release` and commit:\n" + "\n".join(problems)


def test_release_keeps_a_run_notebook(tmp_path):
    copy = tmp_path / "course"
    copy.mkdir()
    shutil.copy(ROOT / "nbgrader_config.py", copy)
    shutil.copytree(ROOT / "solutions", copy / "solutions")
    course.release(copy)
    target = next((copy / "notebooks").rglob("*.ipynb"))
    nb = nbformat.read(target, as_version=4)
    cell = next(c for c in nb.cells if c.cell_type == "code")
    cell.outputs = [nbformat.v4.new_output("stream", text="a student's run\n")]
    cell.source += "\n# my edit"
    nbformat.write(nb, target)
    assert course.release(copy) == [target]
    (kept,) = target.parent.glob("*.before-release-*.ipynb")
    assert "# my edit" in kept.read_text()


@pytest.mark.parametrize("assignment", course.assignments())
def test_pdf_of_each_solution_notebook(graded_class, assignment, tmp_path):
    """The hand-in PDF (pandoc and Typst, from pip) of the graded reference: title, a written answer, figures."""
    copy, _ = graded_class
    for path in (copy / "autograded" / "sample-solution" / assignment).glob("*.ipynb"):
        nb = nbformat.read(path, as_version=4)
        pdf = handin.export_pdf(nb, tmp_path / f"{path.stem}.pdf")
        text, images = pdf_text_and_images(pdf)
        title = next(line[2:] for c in nb.cells if c.cell_type == "markdown" for line in c.source.splitlines()
                     if line.startswith("# "))
        answer = next(c.source for c in nb.cells if c.cell_type == "markdown"
                      and c.metadata.get("nbgrader", {}).get("solution"))
        phrase = plain_phrase(answer)
        assert letters(title.split("—")[0]) in letters(text)
        assert letters(phrase) in letters(text), phrase
        assert images >= 1
