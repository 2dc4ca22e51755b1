"""Import the hand-ins of one assignment from an LMS bulk download into ``submitted/``.

    python -m helpers.collect EXPORT.zip --assignment 01_pca_autoencoders [--students students.csv] [--due 2025-03-01T23:59]

EXPORT is the zip (or its unpacked folder) that Moodle ("Download all
submissions"), Canvas ("Download Submissions") or Blackboard ("Assignment File
Download") gives, or a plain folder of ``<student>*.zip`` / ``<student>*.ipynb``.
Each student's latest hand-in lands in ``submitted/<student>/<assignment>/``: the
notebook under the release's file name (where nbgrader looks for it), the PDF
beside it for the grader, and ``timestamp.txt`` (the LMS's time, which nbgrader
uses for late penalties). ``students.csv`` maps what the LMS knows (names,
e-mail, LMS ids, user names: any columns) to the ``student_id`` column.
Nothing is ever deleted: a submission that a newer one replaces is moved to
``replaced/``, and an older hand-in never replaces a newer one.
"""
from __future__ import annotations

import argparse
import csv
import io
import re
import shutil
import sys
import zipfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import nbformat

COURSE = Path(__file__).resolve().parents[1]
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"  # timestamp.txt; nbgrader parses it as a submission time
# What each LMS writes into a bulk download's file names.
MOODLE = re.compile(r"^(?P<name>[^/]+?)_(?P<id>\d+)_assignsubmission_file_?(?:/|_)(?P<file>.+)$")
BLACKBOARD = re.compile(r"^(?P<assignment>.+)_(?P<user>[^_/]+)_attempt_(?P<time>\d{4}(?:-\d\d){5})(?:_(?P<file>.+))?$")
CANVAS = re.compile(r"^(?P<name>[a-z]+)(?P<late>_LATE)?_(?P<id>\d+)_(?P<sub>\d+)_(?P<file>.+)$")


@dataclass
class HandIn:
    source: str  # the file's name in the export
    keys: tuple[str, ...]  # what identifies the student there: names, ids
    attempt: str  # the group it came in (see _parse)
    time: datetime
    files: dict[str, bytes] = field(default_factory=dict)
    marked_late: bool = False


@dataclass
class Report:
    imported: list[str] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    late: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        parts = [("imported", self.imported), ("kept (what submitted/ holds is newer)", self.kept),
                 ("duplicates (the latest wins)", self.duplicates), ("late", self.late),
                 ("not matched to a student (add them to students.csv)", self.unmatched),
                 ("not imported", self.problems)]
        return "\n".join(f"{title}: {len(lines)}" + "".join(f"\n  {line}" for line in lines)
                         for title, lines in parts if lines or title == "imported")


def key(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def read_roster(path: Path) -> dict[str, str]:
    """Every identifier in ``students.csv`` (any column; names in both orders) → student id."""
    lookup = {}
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            student = row.get("student_id", "").strip()
            if not student:
                raise SystemExit(f"{path}: every row needs a student_id (the column nbgrader's ids come from)")
            for column, value in row.items():
                words = re.split(r"[\s,]+", (value or "").strip())
                for variant in {" ".join(words), " ".join(reversed(words))}:
                    if key(variant):
                        lookup[key(variant)] = student
    return lookup


def _files(export: Path):
    """(path inside the export, time, reader) for every file of a zip or a folder."""
    if export.is_dir():
        for path in sorted(p for p in export.rglob("*") if p.is_file()):
            yield path.relative_to(export).as_posix(), datetime.fromtimestamp(path.stat().st_mtime), path.read_bytes
    else:
        with zipfile.ZipFile(export) as bundle:
            for info in bundle.infolist():
                if not info.is_dir():
                    yield info.filename, datetime(*info.date_time), (lambda info=info: bundle.read(info))


def _parse(path: str, assignment: str) -> tuple[tuple[str, ...], str, str, datetime | None, bool] | None:
    """(student keys, group, file name, time from the name, marked late) for one file of the export.

    A group is what the LMS keeps together (a Moodle student's folder, a Blackboard attempt): a
    loose PDF there belongs to the notebook beside it.
    """
    if match := MOODLE.match(path):
        return (match["name"], match["id"]), f"moodle-{match['id']}", match["file"], None, False
    name = path.rsplit("/", 1)[-1]
    if match := BLACKBOARD.match(name):
        if not match["file"]:
            return None  # Blackboard's receipt (.txt) of the attempt
        when = datetime.strptime(match["time"], "%Y-%m-%d-%H-%M-%S")
        return (match["user"],), f"blackboard-{match['user']}-{match['time']}", match["file"], when, False
    if match := CANVAS.match(name):
        return (match["name"], match["id"]), f"canvas-{match['id']}", match["file"], None, bool(match["late"])
    if name.endswith((".zip", ".ipynb", ".pdf")):
        student = re.sub(rf"({re.escape(assignment)}|-?handin|\.zip|\.ipynb|\.pdf)", "", name).strip("_-. ")
        return ((student,), f"file-{student}", name, None, False) if student else None
    return None


def hand_ins(export: Path, assignment: str) -> tuple[list[HandIn], list[str]]:
    """The export's hand-ins (one per archive or notebook), and the files that could not be read."""
    found, loose_pdfs, problems = [], {}, []
    for path, stamp, read in _files(export):
        parsed = _parse(path, assignment)
        if parsed is None:
            continue
        keys, group, name, named_time, late = parsed
        hand_in = HandIn(path, keys, group, named_time or stamp, marked_late=late)
        if name.endswith(".pdf"):
            loose_pdfs[group] = read()
            continue
        if name.endswith(".zip"):
            try:
                with zipfile.ZipFile(io.BytesIO(read())) as inner:
                    for member in inner.namelist():
                        if member.endswith((".ipynb", ".pdf")) and not member.startswith("__MACOSX") \
                                and ".ipynb_checkpoints" not in member:
                            hand_in.files[member.rsplit("/", 1)[-1]] = inner.read(member)
            except zipfile.BadZipFile:
                problems.append(f"{path}: not a readable zip archive")
                continue
        elif name.endswith(".ipynb"):
            hand_in.files[name] = read()
        else:
            continue
        found.append(hand_in)
    for hand_in in found:
        if hand_in.attempt in loose_pdfs and not any(n.endswith(".pdf") for n in hand_in.files):
            hand_in.files["loose.pdf"] = loose_pdfs[hand_in.attempt]
    return found, problems


def _notebook(hand_in: HandIn, expected: list[str]) -> tuple[str, bytes] | str:
    """(release file name, notebook) of a hand-in, or why there is none that can be graded."""
    notebooks = {n: data for n, data in hand_in.files.items() if n.endswith(".ipynb")}
    if not notebooks:
        return "no notebook in the hand-in"
    chosen = next((n for n in expected if n in notebooks), None)
    if chosen is None and len(notebooks) == 1 and len(expected) == 1:
        chosen = next(iter(notebooks))  # renamed by the student or the LMS
    if chosen is None:
        return f"none of its notebooks ({', '.join(sorted(notebooks))}) is {' or '.join(expected)}"
    try:
        nbformat.reads(notebooks[chosen].decode(), as_version=4)
    except Exception as error:
        return f"{chosen} is not a readable notebook ({type(error).__name__})"
    return (chosen if chosen in expected else expected[0]), notebooks[chosen]


def _existing_time(folder: Path) -> datetime | None:
    stamp = folder / "timestamp.txt"
    if stamp.is_file():
        return datetime.strptime(stamp.read_text().strip()[:19], TIME_FORMAT)
    notebooks = list(folder.glob("*.ipynb"))
    return datetime.fromtimestamp(max(p.stat().st_mtime for p in notebooks)) if notebooks else None


def collect(export: Path, assignment: str, course: Path = COURSE, roster: Path | None = None,
            due: datetime | None = None) -> Report:
    """Import ``export`` into ``course/submitted``; return what happened (see the module's doc)."""
    expected = sorted(p.name for p in (course / "notebooks" / assignment).glob("*.ipynb") if ".before-release-" not in p.name)
    if not expected:
        raise SystemExit(f"no released notebooks in notebooks/{assignment}: check the name (./kit release first)")
    lookup = read_roster(roster) if roster else None
    report = Report()
    found, report.problems = hand_ins(Path(export), assignment)
    by_student: dict[str, list[HandIn]] = {}
    for hand_in in found:
        if lookup is None:
            student = key(hand_in.keys[0]) if " " in hand_in.keys[0] else hand_in.keys[0]
        else:
            student = next((lookup[key(k)] for k in hand_in.keys if key(k) in lookup), None)
        if student is None:
            report.unmatched.append(f"{hand_in.source} ({', '.join(hand_in.keys)})")
        else:
            by_student.setdefault(student, []).append(hand_in)
    for student, attempts in sorted(by_student.items()):
        attempts.sort(key=lambda h: h.time, reverse=True)
        latest = attempts[0]
        report.duplicates += [f"{student}: kept {latest.source} ({latest.time:{TIME_FORMAT}}), "
                              f"not {older.source} ({older.time:{TIME_FORMAT}})" for older in attempts[1:]]
        notebook = _notebook(latest, expected)
        if isinstance(notebook, str):
            report.problems.append(f"{latest.source} ({student}): {notebook}")
            continue
        target = course / "submitted" / student / assignment
        existing = _existing_time(target) if target.is_dir() else None
        if existing and existing >= latest.time:
            report.kept.append(f"{student}: submitted/ has {existing:{TIME_FORMAT}}, the export {latest.time:{TIME_FORMAT}}")
            continue
        if existing:
            backup = course / "replaced" / student / assignment / existing.strftime("%Y%m%d-%H%M%S")
            backup.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(target, backup)
        target.mkdir(parents=True)
        name, content = notebook
        (target / name).write_bytes(content)
        pdfs = [data for n, data in latest.files.items() if n.endswith(".pdf")]
        if pdfs:
            (target / name).with_suffix(".pdf").write_bytes(pdfs[0])
        (target / "timestamp.txt").write_text(latest.time.strftime(TIME_FORMAT))
        report.imported.append(f"{student}: {latest.source} ({latest.time:{TIME_FORMAT}})"
                               + (f", replacing the one of {existing:{TIME_FORMAT}} (moved to replaced/)" if existing else ""))
        if latest.marked_late or (due and latest.time > due):
            report.late.append(f"{student}: {latest.time:{TIME_FORMAT}}" + (f" (due {due:{TIME_FORMAT}})" if due else " (the LMS says late)"))
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.collect", description=__doc__.split("\n")[0])
    parser.add_argument("export", type=Path, help="the LMS's bulk download (.zip or folder)")
    parser.add_argument("--assignment", required=True, help="e.g. 01_pca_autoencoders")
    parser.add_argument("--students", type=Path, help="students.csv: a student_id column and any LMS identifiers")
    parser.add_argument("--due", type=datetime.fromisoformat, help="due date, e.g. 2025-03-01T23:59 (LMS time zone)")
    args = parser.parse_args(argv)
    if not args.export.exists():
        parser.error(f"{args.export} not found")
    roster = args.students or (COURSE / "students.csv" if (COURSE / "students.csv").is_file() else None)
    report = collect(args.export, args.assignment, roster=roster, due=args.due)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
