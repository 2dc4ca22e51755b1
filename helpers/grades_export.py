"""Grades for the LMS, from nbgrader's gradebook: totals per assignment with their autograded and manual parts,
late penalties applied, flagged submissions held out, and optionally one column per graded cell.

    python -m helpers.grades_export --format canvas|moodle|csv [--per-question] [--students students.csv] [--out FILE]

- ``csv``: one row per student: ``student_id``, then per assignment the total, the autograded and the
  manual part, which assignments still wait for manual grading, and ``notes``.
- ``canvas``: Canvas's gradebook import (Gradebook → Import): ``Student, ID, SIS User ID, SIS Login
  ID, Section``, a ``Points Possible`` row, one column of totals per assignment. Canvas matches
  students by ``ID`` (``lms_id`` in students.csv) or by ``SIS User ID`` (the student id). A column
  whose name is not yet an assignment there becomes a new one once you confirm. Canvas has no place
  for notes: they are printed on stderr.
- ``moodle``: for Moodle's "Import grades → CSV file": ``ID number`` (the student id) and ``Email
  address`` (from students.csv) to map users by, then per assignment the total, autograded and manual
  columns, each mapped to a grade item (or ignored) in the import screen, and ``Notes``.
- ``--per-question`` adds, after each assignment's totals, one column per graded cell (test cells and
  written answers), named ``<assignment>: <grade id>`` (``<assignment>: <notebook>/<grade id>`` when the
  assignment has several notebooks), so that each can be mapped to an LMS grade item; Canvas's
  ``Points Possible`` row gives each its maximum. These are the gradebook's scores, before any late penalty.

A student without a submission gets an empty cell, never a zero the LMS would take for a grade.

**Flagged submissions are held out.** A submission with a notebook flagged in the gradebook (nbgrader's
``SubmittedNotebook.flagged``: set by ``./kit grade`` when it touched the grading machinery, or with
formgrader's flag button) gets empty cells and a note with the reasons that grading wrote to
``autograded/<student>/<assignment>/grading.json``, until the instructor clears the flag
(``./kit review``, :mod:`helpers.review`).

**Late work.** The policy is ``LatePolicy`` in ``nbgrader_config.py`` (a penalty per started day late, as a
share of the assignment's maximum score, and a cap; none by default). The due date is the gradebook's
(``nbgrader db assignment add NAME --duedate=…``), moved by the student's ``extension`` in students.csv
(days, or a new due date; see :func:`extension`). The hand-in time is the one nbgrader recorded from the
graded hand-in's ``timestamp.txt``, else ``submitted/<student>/<assignment>/timestamp.txt``. The penalty
is taken from the exported total only; the gradebook keeps the raw scores. Each late hand-in is
described in the notes, with or without a penalty.

What is trusted: the gradebook, students.csv and nbgrader_config.py are the instructor's. grading.json's
reasons may quote what a submission contained, so they reach a file or the terminal capped in length
and without control characters.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import re
import sys
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from traitlets import Float
from traitlets.config import Configurable

from .gradebook import open_gradebook

COURSE = Path(__file__).resolve().parents[1]
FORMATS = ("canvas", "moodle", "csv")
DAY = 86400
TIME = "%Y-%m-%d %H:%M"
REASON_CHARS = 200  # per reason, wherever a reason is written
REASONS_IN_NOTES = 3
GRADING_JSON_LIMIT = 16 << 20  # grading.json is small; a larger one is not read


class LatePolicy(Configurable):
    """The course's late policy, set in ``nbgrader_config.py``, e.g. 10 % per started day, at most 50 %::

        c.LatePolicy.penalty_per_day = 0.10
        c.LatePolicy.cap = 0.50
    """

    penalty_per_day = Float(0.0, min=0.0, max=1.0, help=(
        "Share of the assignment's maximum score taken for each started day (24 h) past the due date; 0: no penalty."
    )).tag(config=True)
    cap = Float(1.0, min=0.0, max=1.0,
                help="The most the penalty takes, as a share of the maximum score.").tag(config=True)

    def share(self, days: int) -> float:
        return min(self.cap, self.penalty_per_day * days)

    def __str__(self) -> str:
        if not self.penalty_per_day:
            return "no late penalty"
        return f"{self.penalty_per_day:.0%} of the maximum per started day late, at most {self.cap:.0%}"


def late_policy(course: Path = COURSE) -> LatePolicy:
    """The policy that the course's ``nbgrader_config.py`` sets (none if it sets none)."""
    from traitlets.config.loader import PyFileConfigLoader

    if not (course / "nbgrader_config.py").is_file():
        return LatePolicy()
    return LatePolicy(config=PyFileConfigLoader("nbgrader_config.py", path=str(course)).load_config())


def extension(text: str, assignment: str, where: str = "students.csv") -> timedelta | datetime | None:
    """The extension that a students.csv ``extension`` cell gives for ``assignment``.

    ``3`` (or ``3 days``, ``1.5``): days added to every assignment's due date; ``2025-03-05 23:59``: a new
    due date (a date alone means the end of that day; the same time zone as the hand-in times);
    ``01_pca_autoencoders=3; 02_energy_models=2025-03-09``: per assignment. An entry naming the
    assignment wins over one that names none.
    """
    found = None
    for item in filter(None, (part.strip() for part in (text or "").split(";"))):
        name, _, value = item.rpartition("=")
        if name.strip() and name.strip() != assignment:
            continue
        if name.strip() or found is None:
            found = _extension_value(value.strip(), where)
    return found


def _extension_value(value: str, where: str) -> timedelta | datetime:
    from nbgrader.utils import parse_utc

    if days := re.fullmatch(r"(\d+(?:\.\d+)?)\s*(?:d|days?)?", value, re.IGNORECASE):
        return timedelta(days=float(days.group(1)))
    if re.match(r"\d{4}-\d\d-\d\d", value):
        try:
            when = parse_utc(value)
        except (ValueError, OverflowError):
            pass
        else:
            # A date alone extends to the end of that day.
            return when + timedelta(days=1, seconds=-1) if re.fullmatch(r"\d{4}-\d\d-\d\d", value) else when
    raise SystemExit(f"{where}: extension {value[:40]!r} is neither a number of days (3) nor a due date "
                     f"(2025-03-05 23:59); for one assignment write NAME=3")


def clean(text: str, limit: int = REASON_CHARS) -> str:
    """Untrusted text as one printable line of at most ``limit`` characters."""
    # Control characters could move the terminal's cursor; bidirectional overrides could reorder what it shows.
    text = re.sub(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]+", " ", str(text)).strip()
    return text if len(text) <= limit else text[:limit - 1] + "…"


def flag_reasons(course: Path, student: str, assignment: str) -> list[str]:
    """Why grading flagged a submission (``grading.json``'s ``flags``), each reason cleaned and capped."""
    path = course / "autograded" / student / assignment / "grading.json"
    try:
        if path.stat().st_size > GRADING_JSON_LIMIT:
            return [f"{path.relative_to(course)} is too large to read ({path.stat().st_size >> 20} MiB)"]
        flags = json.loads(path.read_text(errors="replace")).get("flags", [])
    except FileNotFoundError:
        flags = []
    except (OSError, ValueError, AttributeError):
        return [f"{path.relative_to(course)} could not be read"]
    flags = flags if isinstance(flags, list) else [flags]
    return [clean(reason) for reason in flags[:100]] or ["flagged in the gradebook (no reason recorded: "
                                                          "formgrader's flag button, or an older grading)"]


@dataclass
class Assignment:
    max_score: float
    duedate: datetime | None
    cells: dict[str, float]  # column name of each graded cell -> its maximum, in notebook order


@dataclass
class Score:
    total: float  # raw, as the gradebook holds it
    autograded: float
    manual: float
    needs_manual_grading: bool
    flagged: bool
    timestamp: datetime | None  # the graded hand-in's time, as nbgrader recorded it
    cells: dict[str, float] = field(default_factory=dict)  # column name -> score


def is_autograded(grade) -> bool:
    """Test cells are scored by the autograder (a grader may override them by hand, still "autograded");
    written answers and tasks only by hand."""
    return grade.cell.cell_type == "code"


def _cell_order(course: Path, assignment: str, notebook: str) -> list[str]:
    """The grade ids of the release notebook in order (empty when there is no release here)."""
    import nbformat

    path = course / "notebooks" / assignment / f"{notebook}.ipynb"
    if not path.is_file():
        return []
    return [c.metadata.get("nbgrader", {}).get("grade_id") for c in nbformat.read(path, as_version=4).cells]


def scores(course: Path = COURSE) -> tuple[dict[str, Assignment], dict[str, dict[str, Score]]]:
    """Every assignment, and ``{student: {assignment: Score}}`` for every submission in the gradebook."""
    assignments, table = {}, {}
    with open_gradebook(course) as gradebook:
        for assignment in sorted(gradebook.assignments, key=lambda a: a.name):
            several = len(assignment.notebooks) > 1
            cells = {}
            for notebook in assignment.notebooks:
                order = _cell_order(course, assignment.name, notebook.name)
                graded = sorted(notebook.grade_cells + notebook.task_cells,
                                key=lambda c: (order.index(c.name) if c.name in order else len(order), c.name))
                cells.update({_column(assignment.name, notebook.name, c.name, several): c.max_score for c in graded})
            assignments[assignment.name] = Assignment(assignment.max_score, assignment.duedate, cells)
        for student in gradebook.students:
            table[student.id] = {}
            for submission in student.submissions:
                name = submission.assignment.name
                several = len(submission.assignment.notebooks) > 1
                grades = [(notebook.name, g) for notebook in submission.notebooks for g in notebook.grades]
                table[student.id][name] = Score(
                    submission.score,
                    sum(g.score for _, g in grades if is_autograded(g)),
                    sum(g.score for _, g in grades if not is_autograded(g)),
                    submission.needs_manual_grade,
                    any(notebook.flagged for notebook in submission.notebooks),
                    submission.timestamp,
                    {_column(name, notebook, g.name, several): g.score for notebook, g in grades})
    return assignments, table


def _column(assignment: str, notebook: str, cell: str, several_notebooks: bool) -> str:
    return f"{assignment}: {notebook}/{cell}" if several_notebooks else f"{assignment}: {cell}"


def read_students(path: Path | None) -> dict[str, dict[str, str]]:
    if not path:
        return {}
    with open(path, newline="") as handle:
        return {row["student_id"]: row for row in csv.DictReader(handle)}


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:g}"


@dataclass
class Late:
    handed_in: datetime
    due: datetime  # with the extension
    extended: str  # the extension as students.csv gives it, or ""
    days: int  # started days past the due date
    share: float  # of the maximum score
    points: float  # taken from the total

    def __str__(self) -> str:
        when = (f"{self.days} day{'s' if self.days > 1 else ''} late (handed in {self.handed_in:{TIME}}, due "
                f"{self.due:{TIME}}{f' with the extension {self.extended}' if self.extended else ''})")
        return when + (f": −{self.share:.0%} of the maximum, −{self.points:g} points" if self.share
                       else ": no penalty")


class Grades:
    """The gradebook's scores as the LMS should get them: flagged ones held out, late penalties applied."""

    def __init__(self, course: Path = COURSE, roster: Path | None = None, per_question: bool = False):
        self.course, self.per_question = course, per_question
        self.assignments, self.table = scores(course)
        self.people = read_students(roster)
        self.policy = late_policy(course)
        self.held: dict[tuple[str, str], list[str]] = {}
        self.late: dict[tuple[str, str], Late] = {}
        self.undated: set[str] = set()  # assignments with hand-in times but no due date
        for student, done in sorted(self.table.items()):
            for name, score in done.items():
                if score.flagged:
                    self.held[student, name] = flag_reasons(course, student, name)
                elif late := self._lateness(student, name, score):
                    self.late[student, name] = late

    def _handed_in(self, student: str, name: str, score: Score) -> datetime | None:
        if score.timestamp:
            return score.timestamp
        stamp = self.course / "submitted" / student / name / "timestamp.txt"
        if stamp.is_file():
            from nbgrader.utils import parse_utc

            try:
                return parse_utc(stamp.read_text().strip()[:64])
            except (ValueError, OverflowError):
                return None
        return None

    def _lateness(self, student: str, name: str, score: Score) -> Late | None:
        handed_in = self._handed_in(student, name, score)
        due = self.assignments[name].duedate
        if handed_in is None:
            return None
        if due is None:
            self.undated.add(name)
            return None
        written = self.people.get(student, {}).get("extension", "") or ""
        extra = extension(written, name, where=f"students.csv, {student}")
        if isinstance(extra, timedelta):
            due += extra
        elif isinstance(extra, datetime):
            due = max(due, extra)  # an extension never moves the due date earlier
        seconds = (handed_in - due).total_seconds()
        if seconds <= 0:
            return None
        days = math.ceil(seconds / DAY)
        share = self.policy.share(days)
        points = round(min(score.total, share * self.assignments[name].max_score), 6)
        return Late(handed_in, due, clean(written, 80) if extra is not None else "", days, share, points)

    def total(self, student: str, name: str) -> float:
        late = self.late.get((student, name))
        return self.table[student][name].total - (late.points if late else 0)

    def _value(self, student: str, name: str, part: str) -> str:
        done = self.table[student]
        if name not in done or (student, name) in self.held:
            return ""
        if part == "total":
            return _number(self.total(student, name))
        if part in ("autograded", "manual"):
            return _number(getattr(done[name], part))
        return _number(done[name].cells.get(part))

    def _parts(self, fmt: str) -> list[tuple[str, str, str]]:
        """(assignment, column header, part) of every score column: totals, parts, and cells if asked for."""
        parts = []
        for name, assignment in self.assignments.items():
            parts.append((name, name, "total"))
            if fmt != "canvas":
                parts += [(name, f"{name} autograded", "autograded"), (name, f"{name} manual", "manual")]
            if self.per_question:
                parts += [(name, column, column) for column in assignment.cells]
        return parts

    def notes(self, student: str) -> list[str]:
        notes = []
        for name in self.assignments:
            if reasons := self.held.get((student, name)):
                more = f" (+{len(reasons) - REASONS_IN_NOTES} more)" if len(reasons) > REASONS_IN_NOTES else ""
                notes.append(f"{name}: held out, flagged — {'; '.join(reasons[:REASONS_IN_NOTES])}{more}; "
                             f"clear or zero it with ./kit review")
            elif late := self.late.get((student, name)):
                notes.append(f"{name}: {late}")
        return notes

    def rows(self, fmt: str) -> list[list[str]]:
        if fmt not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")
        parts = self._parts(fmt)
        headers = [header for _, header, _ in parts]
        students = sorted(self.table)
        if fmt == "canvas":
            maxima = [_number(self.assignments[n].max_score if p == "total" else self.assignments[n].cells[p])
                      for n, _, p in parts]
            out = [["Student", "ID", "SIS User ID", "SIS Login ID", "Section", *headers],
                   ["Points Possible", "", "", "", "", *maxima]]
            for student in students:
                who = self.people.get(student, {})
                out.append([who.get("name", student), who.get("lms_id", ""), student, who.get("username", ""), "",
                            *(self._value(student, n, p) for n, _, p in parts)])
            return out
        if fmt == "moodle":
            out = [["ID number", "Email address", *headers, "Notes"]]
        else:
            out = [["student_id", *headers, "needs manual grading", "notes"]]
        for student in students:
            values = [self._value(student, n, p) for n, _, p in parts]
            notes = " | ".join(self.notes(student))
            if fmt == "moodle":
                out.append([student, self.people.get(student, {}).get("email", ""), *values, notes])
            else:
                done = self.table[student]
                waiting = " ".join(n for n in self.assignments if n in done and done[n].needs_manual_grading)
                out.append([student, *values, waiting, notes])
        return out

    def summary(self) -> list[str]:
        """What the instructor must know about this export: held, late, undated, waiting for a grader."""
        lines = []
        if self.held:
            lines.append(f"held out {len(self.held)} flagged submission(s) (empty cells) until you clear or zero "
                         f"them with ./kit review:")
            lines += [f"  {student} / {name}: {'; '.join(reasons[:REASONS_IN_NOTES])}"
                      + (f" (+{len(reasons) - REASONS_IN_NOTES} more)" if len(reasons) > REASONS_IN_NOTES else "")
                      for (student, name), reasons in self.held.items()]
        if self.late:
            lines.append(f"late: {len(self.late)} submission(s) ({self.policy}):")
            lines += [f"  {student} / {name}: {late}" for (student, name), late in self.late.items()]
        if self.undated and self.policy.penalty_per_day:
            lines += [f"no due date in the gradebook for {name}: no late penalty applied (set one with "
                      f"nbgrader db assignment add {name} --duedate='2025-03-01 23:59')"
                      for name in sorted(self.undated)]
        waiting = sorted({student for student, done in self.table.items()
                          if any(score.needs_manual_grading for score in done.values())})
        if waiting:
            lines.append(f"still waiting for manual grading: {', '.join(waiting)}")
        return lines


def export(fmt: str, target: Path, course: Path = COURSE, roster: Path | None = None,
           per_question: bool = False) -> Path:
    write(_grades(course, roster, per_question), fmt, target)
    return target


def _grades(course: Path, roster: Path | None, per_question: bool) -> Grades:
    if not (course / "gradebook.db").is_file():
        raise SystemExit("no gradebook.db here: grade first (./kit grade)")
    return Grades(course, roster, per_question)


def write(grades: Grades, fmt: str, target: Path) -> None:
    rows = grades.rows(fmt)  # before opening: an unknown format leaves no empty file behind
    with open(target, "w", newline="") as handle:
        csv.writer(handle).writerows(rows)


def main(argv: list[str] | None = None, course: Path = COURSE) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.grades_export", description=__doc__.split("\n")[0])
    parser.add_argument("--format", choices=FORMATS, default="csv")
    parser.add_argument("--per-question", action="store_true",
                        help="also one column per graded cell (test cells and written answers)")
    parser.add_argument("--students", type=Path, help="students.csv with names, e-mail, LMS ids and extensions "
                                                      "(default: ./students.csv if present)")
    parser.add_argument("--out", type=Path, help="file to write (default: grades-<format>.csv)")
    args = parser.parse_args(argv)
    roster = args.students or (course / "students.csv" if (course / "students.csv").is_file() else None)
    grades = _grades(course, roster, args.per_question)
    target = args.out or course / f"grades-{args.format}.csv"
    write(grades, args.format, target)
    print(f"wrote {target}")
    if summary := grades.summary():
        # Canvas's file has no notes column: what the others note goes to stderr there.
        print("\n".join(summary), file=sys.stderr if args.format == "canvas" else sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
