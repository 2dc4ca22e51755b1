"""Safe regrades: which recorded grades came from an older checker, and what changed when they ran again.

    python -m helpers.course grade --regrade-changed      # ./kit grade --regrade-changed

Each recorded grade carries the *version* of what graded it (:func:`version`, written by
:func:`helpers.grading._record` into ``autograded/<student>/<assignment>/grading.json`` as ``version``):
a hash of the assignment's test cells (visible and hidden tests and their points, from the source
notebooks in ``solutions/``, which ``./kit grade`` copies into the gradebook before it grades) and of
``helpers/checks/*.py``. A submission whose recorded version differs, or that was recorded before
versions were (none in its grading.json), is *stale*; ``--regrade-changed`` grades exactly the stale
ones again, besides what ``./kit grade`` grades anyway (new and resubmitted hand-ins).

Manual grades are kept: nbgrader's autograde writes only the autograded score and comment, never a
manual score or comment, and a manual score outranks the autograded one, so a score an instructor
set by hand is never lowered by a regrade. Where the checker now disagrees with such a score, the
cell is marked *needs manual grade* (nbgrader does this) and the report lists it.

Written: ``reports/regrade-<date-time>.md`` and ``.csv``: per regraded student and graded cell the old
and new score (and the autograder's, where a manual score decides), the new failure message, and a
summary of how many students gained or lost points.

What is trusted: the gradebook, ``solutions/`` and ``helpers/checks`` are the instructor's.
grading.json's messages are the checkers' and may quote a submission's values: they are cut to one line
without control characters.
"""
from __future__ import annotations

import hashlib
import json
import re
import time
from pathlib import Path

import nbformat
import pandas as pd

from .gradebook import open_gradebook, read_record, record_path

CHECKS = Path(__file__).resolve().parent / "checks"
COLUMNS = ["student", "assignment", "notebook", "question", "max_score", "old_score", "new_score", "old_auto",
           "new_auto", "manual", "change", "message"]


def version(course: Path, assignment: str) -> str:
    """The version of what grades ``assignment``: its test cells in solutions/ and helpers/checks/*.py."""
    digest = hashlib.sha256()
    for path in sorted((course / "solutions" / assignment).glob("*.ipynb")):
        for cell in nbformat.read(path, as_version=4).cells:
            meta = cell.metadata.get("nbgrader", {})
            if cell.cell_type == "code" and meta.get("grade") and not meta.get("solution"):
                digest.update(json.dumps([path.name, meta.get("grade_id"), meta.get("points"), cell.source]).encode())
    for path in sorted(CHECKS.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def stale(course: Path, student: str, assignment: str) -> bool:
    """Was this graded submission graded by another version than the current one (or before versions)?"""
    if not (course / "autograded" / student / assignment).is_dir():
        return False  # never graded: ./kit grade grades it anyway, it is no regrade
    return read_record(record_path(course, student, assignment)).get("version") != version(course, assignment)


def stale_submissions(course: Path) -> list[tuple[str, str]]:
    """Every (student, assignment) graded by an older version."""
    return sorted((p.parent.name, p.name) for p in (course / "autograded").glob("*/*")
                  if p.is_dir() and stale(course, p.parent.name, p.name))


def _message(verdict) -> str:
    if not isinstance(verdict, dict) or verdict.get("passed") is True:
        return ""
    line = str(verdict.get("message", "")).strip().splitlines()
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", line[0] if line else "")
    return "".join(ch for ch in text if ch.isprintable())[:200] or "(no message)"


def snapshot(course: Path, submissions: list[tuple[str, str]]) -> pd.DataFrame:
    """Per graded cell of these submissions: score, autograded and manual score, and the failure message."""
    from nbgrader.api import MissingEntry

    rows = []
    with open_gradebook(course) as gradebook:
        for student, assignment in submissions:
            try:
                record = gradebook.find_submission(assignment, student)
            except MissingEntry:
                continue
            verdicts = read_record(record_path(course, student, assignment)).get("verdicts", {})
            for notebook in record.notebooks:
                cells = verdicts.get(f"{notebook.name}.ipynb", {}) if isinstance(verdicts, dict) else {}
                for grade in notebook.grades:
                    rows.append(dict(student=student, assignment=assignment, notebook=notebook.name,
                                     question=grade.name, max_score=grade.max_score, score=float(grade.score),
                                     auto=grade.auto_score, manual=grade.manual_score,
                                     message=_message(cells.get(grade.name) if isinstance(cells, dict) else None)))
    return pd.DataFrame(rows, columns=["student", "assignment", "notebook", "question", "max_score", "score", "auto",
                                       "manual", "message"])


def delta(before: pd.DataFrame, after: pd.DataFrame) -> pd.DataFrame:
    """One row per graded cell: old and new score, the autograder's, the manual score kept, what changed."""
    keys = ["student", "assignment", "notebook", "question"]
    merged = before.merge(after, on=keys, how="outer", suffixes=("_old", "_new"))
    rows = []
    for r in merged.itertuples():
        manual = r.manual_new if pd.notna(r.manual_new) else None
        if r.score_new > r.score_old:
            change = "gained"
        elif r.score_new < r.score_old:
            change = "lost"
        elif manual is not None and pd.notna(r.auto_new) and r.auto_new != r.auto_old:
            change = "manual score kept; the autograder changed its mind"
        else:
            change = ""
        rows.append(dict(student=r.student, assignment=r.assignment, notebook=r.notebook, question=r.question,
                         max_score=r.max_score_new, old_score=r.score_old, new_score=r.score_new,
                         old_auto=r.auto_old, new_auto=r.auto_new, manual=manual, change=change,
                         message=r.message_new if isinstance(r.message_new, str) else ""))
    return pd.DataFrame(rows, columns=COLUMNS)


def summary(table: pd.DataFrame) -> dict[str, list[str]]:
    """Students who gained, lost, or kept their total, over the regraded submissions."""
    totals = table.groupby(["student", "assignment"]).agg(old=("old_score", "sum"), new=("new_score", "sum"))
    return {"gained": [f"{s} / {a}" for (s, a), r in totals.iterrows() if r.new > r.old],
            "lost": [f"{s} / {a}" for (s, a), r in totals.iterrows() if r.new < r.old],
            "unchanged": [f"{s} / {a}" for (s, a), r in totals.iterrows() if r.new == r.old]}


def write_report(course: Path, table: pd.DataFrame, seconds: float | None = None) -> Path:
    """reports/regrade-<date-time>.md and .csv; the .md's path."""
    out = course / "reports"
    out.mkdir(exist_ok=True)
    stem = out / f"regrade-{time.strftime('%Y-%m-%d-%H%M%S')}"
    table.to_csv(stem.with_suffix(".csv"), index=False)
    groups = summary(table)
    changed = table[table.change != ""]
    lines = ["# Regrade after a checker change", "",
             f"{len(groups['gained']) + len(groups['lost']) + len(groups['unchanged'])} submission(s) graded by an "
             f"older version were graded again" + (f" in {seconds:.0f} s" if seconds is not None else "") + ": "
             f"{len(groups['gained'])} gained points, {len(groups['lost'])} lost points, "
             f"{len(groups['unchanged'])} unchanged. Manual scores and comments were kept; a manual score outranks "
             f"the autograder's, so no score set by hand was lowered.", ""]
    for what in ("gained", "lost"):
        if groups[what]:
            lines += [f"- {what}: " + ", ".join(groups[what])]
    lines += ["", "## Cells that changed", ""]
    if changed.empty:
        lines.append("none")
    else:
        shown = changed[["student", "assignment", "question", "old_score", "new_score", "old_auto", "new_auto",
                         "manual", "change", "message"]]
        lines += ["```", shown.to_string(index=False), "```"]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    return stem.with_suffix(".md")


def regrade_changed(course: Path, timeout: int | None = None, options=None):
    """Grade again exactly the submissions graded by an older version; (grades.csv, outcome, report or None)."""
    from . import course as course_module
    from . import grading

    options = options or grading.Options()
    options.regrade_changed = True
    targets = stale_submissions(course)
    before = snapshot(course, targets)
    started = time.monotonic()
    csv, outcome = course_module.grade(course, timeout=timeout, options=options)
    if not targets:
        return csv, outcome, None
    return csv, outcome, write_report(course, delta(before, snapshot(course, targets)), time.monotonic() - started)
