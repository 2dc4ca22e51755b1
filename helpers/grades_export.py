"""Grades for the LMS, from nbgrader's gradebook: totals per assignment with their autograded and manual parts.

    python -m helpers.grades_export --format canvas|moodle|csv [--students students.csv] [--out FILE]

- ``csv``: one row per student: ``student_id``, then per assignment the total, the autograded and the
  manual part, and which assignments still wait for manual grading.
- ``canvas``: Canvas's gradebook import (Gradebook → Import): ``Student, ID, SIS User ID, SIS Login
  ID, Section``, a ``Points Possible`` row, one column of totals per assignment. Canvas matches
  students by ``ID`` (``lms_id`` in students.csv) or by ``SIS User ID`` (the student id). A column
  whose name is not yet an assignment there becomes a new one once you confirm.
- ``moodle``: for Moodle's "Import grades → CSV file": ``ID number`` (the student id) and ``Email
  address`` (from students.csv) to map users by, then per assignment the total, autograded and manual
  columns, each mapped to a grade item (or ignored) in the import screen.

A student without a submission gets an empty cell, never a zero the LMS would take for a grade.
"""
from __future__ import annotations

import argparse
import csv
import sys
from dataclasses import dataclass
from pathlib import Path

COURSE = Path(__file__).resolve().parents[1]
FORMATS = ("canvas", "moodle", "csv")


@dataclass
class Score:
    total: float
    autograded: float
    manual: float
    needs_manual_grading: bool


def scores(course: Path = COURSE) -> tuple[dict[str, float], dict[str, dict[str, Score]]]:
    """Maximum per assignment, and ``{student: {assignment: Score}}`` for every submission in the gradebook."""
    from nbgrader.api import Gradebook

    maxima, table = {}, {}
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gradebook:
        for assignment in sorted(gradebook.assignments, key=lambda a: a.name):
            maxima[assignment.name] = assignment.max_score
        for student in gradebook.students:
            table[student.id] = {}
            for submission in student.submissions:
                # Test cells are scored by the autograder (a grader may override them by hand, still "autograded");
                # written answers and tasks only by hand.
                grades = [g for notebook in submission.notebooks for g in notebook.grades]
                auto = sum(g.score for g in grades if g.cell_type == "code")
                manual = sum(g.score for g in grades if g.cell_type != "code")
                table[student.id][submission.assignment.name] = Score(
                    submission.score, auto, manual, submission.needs_manual_grade)
    return maxima, table


def read_students(path: Path | None) -> dict[str, dict[str, str]]:
    if not path:
        return {}
    with open(path, newline="") as handle:
        return {row["student_id"]: row for row in csv.DictReader(handle)}


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:g}"


def rows(fmt: str, course: Path = COURSE, roster: Path | None = None) -> list[list[str]]:
    maxima, table = scores(course)
    people = read_students(roster)
    names = list(maxima)
    if fmt == "canvas":
        out = [["Student", "ID", "SIS User ID", "SIS Login ID", "Section", *names],
               ["Points Possible", "", "", "", "", *(_number(maxima[n]) for n in names)]]
        for student, done in sorted(table.items()):
            who = people.get(student, {})
            out.append([who.get("name", student), who.get("lms_id", ""), student, who.get("username", ""), "",
                        *(_number(done[n].total) if n in done else "" for n in names)])
        return out
    parts = [(n, part) for n in names for part in ("total", "autograded", "manual")]
    header = [f"{n}" if part == "total" else f"{n} {part}" for n, part in parts]
    if fmt == "moodle":
        out = [["ID number", "Email address", *header]]
    else:
        out = [["student_id", *header, "needs manual grading"]]
    for student, done in sorted(table.items()):
        values = [_number(getattr(done[n], part)) if n in done else "" for n, part in parts]
        if fmt == "moodle":
            out.append([student, people.get(student, {}).get("email", ""), *values])
        else:
            out.append([student, *values, " ".join(n for n in names if n in done and done[n].needs_manual_grading)])
    return out


def export(fmt: str, target: Path, course: Path = COURSE, roster: Path | None = None) -> Path:
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    if not (course / "gradebook.db").is_file():
        raise SystemExit("no gradebook.db here: grade first (./kit grade)")
    with open(target, "w", newline="") as handle:
        csv.writer(handle).writerows(rows(fmt, course, roster))
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.grades_export", description=__doc__.split("\n")[0])
    parser.add_argument("--format", choices=FORMATS, default="csv")
    parser.add_argument("--students", type=Path, help="students.csv with names, e-mail and LMS ids (default: ./students.csv if present)")
    parser.add_argument("--out", type=Path, help="file to write (default: grades-<format>.csv)")
    args = parser.parse_args(argv)
    roster = args.students or (COURSE / "students.csv" if (COURSE / "students.csv").is_file() else None)
    target = export(args.format, args.out or COURSE / f"grades-{args.format}.csv", roster=roster)
    waiting = [r[0] for r in rows("csv", COURSE)[1:] if r[-1]]
    print(f"wrote {target}" + (f"; still waiting for manual grading: {', '.join(waiting)}" if waiting else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
