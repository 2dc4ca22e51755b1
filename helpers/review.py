"""Flagged submissions, for the instructor to decide on: list them, clear a flag, or zero the autograded scores.

    python -m helpers.review                               # each flagged submission: reasons, current scores
    python -m helpers.review --clear STUDENT ASSIGNMENT    # keep the scores, clear the flag
    python -m helpers.review --zero STUDENT ASSIGNMENT     # autograded scores to 0, clear the flag

A submission is flagged when a notebook of it has nbgrader's ``SubmittedNotebook.flagged`` set: by
``./kit grade`` when its code reached for the grading machinery or its kernel answered with what no honest
kernel sends (the reasons in ``autograded/<student>/<assignment>/grading.json``), or by a grader with
formgrader's flag button. ``./kit export-grades`` leaves its scores out until the flag is cleared.

``--zero`` writes 0 as the *manual* score of every autograded cell (the grader's override, which nbgrader's
score prefers to the autograder's): a later regrade updates only the autograded score, so the zero stays,
and nbgrader marks the cell *needs manual grade* again, so the override is seen, not silently kept or
undone. Written answers keep their scores. The same in formgrader: open the submission, enter 0 in each
test cell's score box, and unflag it with the flag button at the top; unflagging there is ``--clear``.

Each decision is appended to ``reports/review.log`` with the scores before and after.

What is trusted: the gradebook is the instructor's; grading.json's reasons may quote a submission, so they
are printed capped and without control characters (:func:`helpers.grades_export.flag_reasons`).
"""
from __future__ import annotations

import json

import argparse
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from .gradebook import open_gradebook, read_record, record_path
from .grades_export import COURSE, flag_reasons, is_autograded
REASONS_SHOWN = 10


@dataclass
class Flagged:
    student: str
    assignment: str
    score: float
    max_score: float
    autograded: float
    manual: float
    reasons: list[str]

    def __str__(self) -> str:
        shown = [f"    - {reason}" for reason in self.reasons[:REASONS_SHOWN]]
        if len(self.reasons) > REASONS_SHOWN:
            shown.append(f"    … and {len(self.reasons) - REASONS_SHOWN} more in "
                         f"autograded/{self.student}/{self.assignment}/grading.json")
        return "\n".join([f"{self.student} / {self.assignment}: {self.score:g} / {self.max_score:g} "
                          f"(autograded {self.autograded:g}, manual {self.manual:g})", *shown])


def _gradebook(course: Path):
    if not (course / "gradebook.db").is_file():
        raise SystemExit("no gradebook.db here: grade first (./kit grade)")
    return open_gradebook(course)


def _parts(submission) -> tuple[float, float]:
    grades = [g for notebook in submission.notebooks for g in notebook.grades]
    return sum(g.score for g in grades if is_autograded(g)), sum(g.score for g in grades if not is_autograded(g))


def flagged(course: Path = COURSE) -> list[Flagged]:
    """Every flagged submission in the gradebook, by student and assignment."""
    from nbgrader.api import SubmittedNotebook

    found = {}
    with _gradebook(course) as gradebook:
        for notebook in gradebook.db.query(SubmittedNotebook).filter(SubmittedNotebook.flagged.is_(True)):
            submission = notebook.assignment
            key = (submission.student.id, submission.assignment.name)
            if key not in found:
                found[key] = Flagged(*key, submission.score, submission.max_score, *_parts(submission),
                                     flag_reasons(course, *key))
    return [found[key] for key in sorted(found)]


def _submission(gradebook, student: str, assignment: str):
    from nbgrader.api import MissingEntry

    try:
        return gradebook.find_submission(assignment, student)
    except MissingEntry:
        raise SystemExit(f"no submission of {assignment} by {student} in the gradebook") from None


def _log(course: Path, line: str) -> None:
    log = course / "reports" / "review.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as handle:
        handle.write(f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M:%S} UTC {line}\n")


def _remember_cleared(course: Path, student: str, assignment: str) -> None:
    """Note the reasons the instructor has seen in grading.json: a regrade that finds only these flags no more."""
    record = record_path(course, student, assignment)
    data = read_record(record)
    if isinstance(data.get("flags"), list):
        data["cleared"] = sorted({*data.get("cleared", []), *map(str, data["flags"])})
        record.write_text(json.dumps(data, indent=1))


def clear(student: str, assignment: str, course: Path = COURSE) -> str:
    """Clear the flag and keep the scores; what was done, in one line."""
    with _gradebook(course) as gradebook:
        submission = _submission(gradebook, student, assignment)
        if not any(notebook.flagged for notebook in submission.notebooks):
            return f"{student} / {assignment} is not flagged: nothing to clear"
        for notebook in submission.notebooks:
            notebook.flagged = False
        gradebook.db.commit()
        line = f"{student} / {assignment}: flag cleared, scores kept ({submission.score:g} / {submission.max_score:g})"
    _remember_cleared(course, student, assignment)
    _log(course, line)
    return line


def zero(student: str, assignment: str, course: Path = COURSE) -> str:
    """Set every autograded cell's score to 0 as a manual override and clear the flag; what was done."""
    with _gradebook(course) as gradebook:
        submission = _submission(gradebook, student, assignment)
        before = submission.score
        for notebook in submission.notebooks:
            for grade in notebook.grades:
                if is_autograded(grade):
                    grade.manual_score = 0.0
                    grade.needs_manual_grade = False
            notebook.flagged = False
        gradebook.db.commit()
        gradebook.db.refresh(submission)
        line = (f"{student} / {assignment}: autograded scores set to 0 (manual overrides), flag cleared; "
                f"{before:g} → {submission.score:g} / {submission.max_score:g}")
    _remember_cleared(course, student, assignment)
    _log(course, line)
    return line


def main(argv: list[str] | None = None, course: Path = COURSE) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.review", description=__doc__.split("\n")[0])
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--clear", nargs=2, metavar=("STUDENT", "ASSIGNMENT"), help="keep the scores, clear the flag")
    action.add_argument("--zero", nargs=2, metavar=("STUDENT", "ASSIGNMENT"),
                        help="set the autograded scores to 0 (manual overrides) and clear the flag")
    args = parser.parse_args(argv)
    if args.clear:
        print(clear(*args.clear, course=course))
        return 0
    if args.zero:
        print(zero(*args.zero, course=course) + "\n(its feedback page shows the new scores after the next ./kit grade)")
        return 0
    found = flagged(course)
    if not found:
        print("no flagged submissions: ./kit export-grades holds nothing out")
        return 0
    print(f"{len(found)} flagged submission(s), held out of ./kit export-grades until you decide:\n")
    print("\n\n".join(map(str, found)))
    print("\n./kit review --clear STUDENT ASSIGNMENT   keeps the scores and clears the flag\n"
          "./kit review --zero STUDENT ASSIGNMENT    sets the autograded scores to 0 and clears the flag\n"
          "(or in formgrader: the submission's flag button; a test cell's score box for an override)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
