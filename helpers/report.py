"""The instructor's report after grading: per-question statistics and score distributions.

Written to ``reports/``: ``questions.csv`` (one row per notebook and graded
cell: mean, min, max, how many students lost points), ``scores.png`` (the
distribution of total scores per notebook), the item analysis
(:mod:`helpers.item_analysis`: ``items.csv``, ``items-<assignment>.png``) and
``report.md`` (the tables and the list of submissions that could not be graded
normally).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from .gradebook import open_gradebook


def question_scores(course: Path) -> pd.DataFrame:
    """One row per graded submission and graded cell, from nbgrader's gradebook."""
    rows = []
    with open_gradebook(course) as gradebook:
        for assignment in gradebook.assignments:
            for submission in assignment.submissions:
                for notebook in submission.notebooks:
                    for grade in notebook.grades:
                        rows.append(dict(assignment=assignment.name, notebook=notebook.name, question=grade.name,
                                         kind="auto" if grade.auto_score is not None else "manual",
                                         student=submission.student.id, score=grade.score,
                                         max_score=grade.max_score, needs_manual=bool(grade.needs_manual_grade)))
    return pd.DataFrame(rows, columns=["assignment", "notebook", "question", "kind", "student", "score",
                                       "max_score", "needs_manual"])


def question_table(scores: pd.DataFrame) -> pd.DataFrame:
    """Mean, min, max and how many students lost points, per notebook and question."""
    if scores.empty:
        return pd.DataFrame()
    graded = scores.assign(lost=scores.score < scores.max_score)
    table = graded.groupby(["notebook", "question"], sort=False).agg(
        max_points=("max_score", "first"), mean=("score", "mean"), min=("score", "min"), max=("score", "max"),
        students=("student", "nunique"), lost_points=("lost", "sum"), awaiting_manual=("needs_manual", "sum"))
    return table.round(2)


def score_plot(grades: pd.DataFrame, path: Path) -> Path:
    """Histogram of total scores per assignment, saved as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted(grades.assignment.unique())
    fig, axes = plt.subplots(1, max(len(names), 1), figsize=(4.5 * max(len(names), 1), 3.4), squeeze=False)
    for ax, name in zip(axes[0], names):
        rows = grades[grades.assignment == name]
        top = float(rows.max_score.max())
        ax.hist(rows.score, bins=min(20, max(5, int(top))), range=(0, top), color="tab:blue", edgecolor="white")
        ax.set(title=f"{name} (n = {len(rows)})", xlabel=f"score (of {top:g})", ylabel="students")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_report(course: Path, grades_csv: Path, problems: list[str]) -> Path:
    """Write questions.csv, scores.png and report.md under ``course/reports``; return report.md."""
    out = course / "reports"
    out.mkdir(exist_ok=True)
    grades = pd.read_csv(grades_csv)
    table = question_table(question_scores(course))
    table.to_csv(out / "questions.csv")
    score_plot(grades, out / "scores.png")
    from .item_analysis import markdown, write_items

    lines = ["# Grading report", "", "## Scores per question", "",
             "```", table.to_string() if not table.empty else "(nothing graded yet)", "```", "",
             "![score distributions](scores.png)", "", *markdown(write_items(course)), "## Submissions that need a look", ""]
    lines += [f"- {p}" for p in problems] or ["- none"]
    report = out / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return report
