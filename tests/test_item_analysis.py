"""Item analysis on a small class with known answers: means, full and zero shares, discrimination against the
rest of the assignment, grouped failure messages, flags, and the report's section and figure."""
import json
import os
import sys
import warnings
from pathlib import Path

import pandas as pd
import pytest
from scipy.stats import pointbiserialr

from helpers import item_analysis, report

STUDENTS = ["s1", "s2", "s3", "s4", "s5"]
# question -> (points, scores per student; None: waits for a grader)
SCORES = {
    "test_easy": (1, [1, 1, 1, 1, 1]),
    "test_hard": (2, [0, 0, 0, 0, 0]),
    "test_good": (1, [1, 1, 1, 0, 0]),
    "test_bad": (1, [0, 0, 0, 1, 1]),
    "written": (3, [3, 3, 2, 0, None]),
}
MESSAGES = {  # failure messages of test_hard, as the checkers word them with each student's values
    "s1": "standardize: expected shape (3, 4), got (4, 3)",
    "s2": "standardize: expected shape (10, 4), got (4, 10)",
    "s3": "standardize: expected shape (3, 4), got (3, 5)",
    "s4": "standardize returned NaN in column 2\nwhile the data have none",
    "s5": "standardize: expected shape (7, 4), got (4, 7)\x1b[2J",
}


@pytest.fixture(scope="module")
def small_class(tmp_path_factory):
    from nbgrader.api import Gradebook

    tools = str(Path(sys.executable).parent)  # nbgrader runs `alembic` through PATH to create a gradebook
    if tools not in os.environ["PATH"].split(os.pathsep):
        os.environ["PATH"] = tools + os.pathsep + os.environ["PATH"]
    folder = tmp_path_factory.mktemp("course")
    with Gradebook(f"sqlite:///{folder / 'gradebook.db'}") as gradebook, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gradebook.add_assignment("a1")
        gradebook.add_notebook("a1", "a1")
        for question, (points, _) in SCORES.items():
            gradebook.add_grade_cell(question, "a1", "a1", max_score=points,
                                     cell_type="code" if question.startswith("test_") else "markdown")
        for i, student in enumerate(STUDENTS):
            gradebook.add_student(student)
            gradebook.add_submission("a1", student)
            for question, (_, scores) in SCORES.items():
                grade = gradebook.find_grade(question, "a1", "a1", student)
                if question.startswith("test_"):
                    grade.auto_score = scores[i]
                else:
                    grade.manual_score = scores[i]
                grade.needs_manual_grade = scores[i] is None
            gradebook.db.commit()
    for i, student in enumerate(STUDENTS):
        verdicts = {q: {"passed": SCORES[q][1][i] == SCORES[q][0], "kind": "check", "lines": [],
                        "message": MESSAGES[student] if q == "test_hard" else ("" if SCORES[q][1][i] else f"{q} failed")}
                    for q in SCORES if q.startswith("test_")}
        graded = folder / "autograded" / student / "a1"
        graded.mkdir(parents=True)
        (graded / "grading.json").write_text(json.dumps({"flags": [], "verdicts": {"a1.ipynb": verdicts}}))
    return folder


@pytest.fixture(scope="module")
def table(small_class):
    return item_analysis.write_items(small_class).set_index("question")


def test_means_and_shares(table):
    assert table.loc["test_good", ["mean", "full_share", "zero_share", "students"]].tolist() == [0.6, 0.6, 0.4, 5]
    assert table.loc["test_hard", ["mean", "full_share", "zero_share"]].tolist() == [0, 0, 1]
    # s5's written answer waits for a grader: left out, 4 students, mean of 3, 3, 2, 0
    assert table.loc["written", ["students", "mean", "full_share", "zero_share"]].tolist() == [4, 2, 0.5, 0.25]


def test_discrimination_is_the_point_biserial_against_the_rest(table):
    totals = {s: sum(scores[i] for scores in (v[1] for v in SCORES.values()) if scores[i] is not None)
              for i, s in enumerate(STUDENTS)}
    good = SCORES["test_good"][1]
    rest = [totals[s] - good[i] for i, s in enumerate(STUDENTS)]
    assert table.loc["test_good", "discrimination"] == pytest.approx(pointbiserialr(good, rest)[0], abs=0.005)
    assert table.loc["test_good", "discrimination"] > 0.9
    assert table.loc["test_bad", "discrimination"] < 0
    assert pd.isna(table.loc["test_easy", "discrimination"])  # nothing varies


def test_flags(table):
    assert table.loc["test_easy", "flags"] == "everybody passed"
    assert table.loc["test_hard", "flags"] == "nobody passed"
    assert table.loc["test_bad", "flags"] == "negative discrimination"
    assert table.loc["test_good", "flags"] == "" and table.loc["written", "flags"] == ""


def test_failure_messages_are_grouped_by_cause(table):
    assert table.loc["test_hard", "failure_messages"] == (
        "4× standardize: expected shape (#, #), got (#, #); 1× standardize returned NaN in column #")
    assert table.loc["test_good", "failure_messages"] == "2× test_good failed"
    assert "\x1b" not in (table.failure_messages.str.cat())


def test_report_section_and_figure(small_class, table):
    grades = small_class / "grades.csv"
    pd.DataFrame(dict(assignment="a1", student_id=STUDENTS, score=[5, 5, 4, 2, 2], max_score=8)).to_csv(grades)
    text = report.write_report(small_class, grades, []).read_text()
    assert "## Item analysis" in text and "![items of a1](items-a1.png)" in text
    assert "- **test_hard**: nobody passed" in text and "- **test_bad**: negative discrimination" in text
    assert (small_class / "reports" / "items-a1.png").stat().st_size > 1000
    assert (small_class / "reports" / "items.csv").exists()
