"""Importing an LMS's bulk download: Moodle, Canvas, Blackboard and a plain folder, into nbgrader's layout."""
import io
import os
import zipfile
from datetime import datetime

import nbformat
import pytest
from classroom import ASSIGNMENT, NOTEBOOK, scores, short_course, solved

from helpers import collect, course

DUE = datetime(2025, 3, 2, 23, 59)
EARLY, LATER, LATE = datetime(2025, 3, 1, 9, 0), datetime(2025, 3, 1, 10, 0), datetime(2025, 3, 3, 8, 0)
ROSTER = """student_id,name,email,lms_id,username
jane-doe,Jane Doe,jane@example.org,1001,jdoe
omar-said,Omar Said,omar@example.org,1002,osaid
lee-chan,Lee Chan,lee@example.org,1004,lchan
"""
PDF = b"%PDF-1.4 the hand-in's PDF"


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    return short_course(tmp_path_factory.mktemp("course"))


@pytest.fixture
def course_dir(template, tmp_path):
    """A fresh copy of the released short course, with a roster."""
    copy = tmp_path / "course"
    for path in template.rglob("*"):
        if path.is_file() and "submitted" not in path.parts:
            (copy / path.relative_to(template)).parent.mkdir(parents=True, exist_ok=True)
            (copy / path.relative_to(template)).write_bytes(path.read_bytes())
    (copy / "students.csv").write_text(ROSTER)
    return copy


def handin_zip(nb) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        bundle.writestr(NOTEBOOK, nbformat.writes(nb))
        bundle.writestr(NOTEBOOK.replace(".ipynb", ".pdf"), PDF)
    return buffer.getvalue()


def files(course_dir):
    """The export's files: (name in the export, time, content), named as each LMS names them."""
    nb = solved(course_dir)
    old = solved(course_dir, written="an older attempt")
    stub = ASSIGNMENT
    return {
        "moodle": [
            (f"Jane Doe_1001_assignsubmission_file_/{stub}-handin.zip", LATER, handin_zip(nb)),
            (f"Jane Doe_1001_assignsubmission_file_/{NOTEBOOK}", EARLY, nbformat.writes(old).encode()),
            (f"Omar Said_1002_assignsubmission_file_/my work.ipynb", LATE, nbformat.writes(nb).encode()),
            (f"Zed Unknown_1009_assignsubmission_file_/{NOTEBOOK}", EARLY, nbformat.writes(nb).encode()),
            (f"Lee Chan_1004_assignsubmission_file_/{stub}-handin.zip", EARLY, b"PK\x03\x04 truncated"),
        ],
        "canvas": [
            (f"doejane_1001_5001_{stub}-handin.zip", LATER, handin_zip(nb)),
            (f"doejane_1001_5000_{NOTEBOOK}", EARLY, nbformat.writes(old).encode()),
            (f"saidomar_LATE_1002_5002_{NOTEBOOK}", LATE, nbformat.writes(nb).encode()),
            (f"unknownzed_1009_5009_{NOTEBOOK}", EARLY, nbformat.writes(nb).encode()),
            (f"chanlee_1004_5004_{stub}-handin.zip", EARLY, b"PK\x03\x04 truncated"),
        ],
        "blackboard": [
            (f"01 PCA_jdoe_attempt_2025-03-01-10-00-00_{stub}-handin.zip", LATER, handin_zip(nb)),
            ("01 PCA_jdoe_attempt_2025-03-01-10-00-00.txt", LATER, b"Name: Jane Doe (jdoe)"),
            (f"01 PCA_jdoe_attempt_2025-03-01-09-00-00_{NOTEBOOK}", EARLY, nbformat.writes(old).encode()),
            (f"01 PCA_osaid_attempt_2025-03-03-08-00-00_{NOTEBOOK}", LATE, nbformat.writes(nb).encode()),
            (f"01 PCA_zunknown_attempt_2025-03-01-09-00-00_{NOTEBOOK}", EARLY, nbformat.writes(nb).encode()),
            (f"01 PCA_lchan_attempt_2025-03-01-09-00-00_{stub}-handin.zip", EARLY, b"PK\x03\x04 truncated"),
        ],
        "folder": [
            (f"jane-doe-{stub}-handin.zip", LATER, handin_zip(nb)),
            ("jane-doe.ipynb", EARLY, nbformat.writes(old).encode()),
            (f"omar-said_{NOTEBOOK}", LATE, nbformat.writes(nb).encode()),
            ("unknown-zed.ipynb", EARLY, nbformat.writes(nb).encode()),
            ("lee-chan-handin.zip", EARLY, b"PK\x03\x04 truncated"),
        ],
    }


def write_export(kind, entries, folder):
    if kind == "folder":  # a plain folder, times from the files
        folder.mkdir()
        for name, when, content in entries:
            (folder / name).write_bytes(content)
            os.utime(folder / name, (when.timestamp(), when.timestamp()))
        return folder
    path = folder.with_suffix(".zip")
    with zipfile.ZipFile(path, "w") as bundle:
        for name, when, content in entries:
            bundle.writestr(zipfile.ZipInfo(name, date_time=when.timetuple()[:6]), content)
    return path


@pytest.mark.parametrize("kind", ["moodle", "canvas", "blackboard", "folder"])
def test_collect_imports_each_lms_export(kind, course_dir, tmp_path):
    export = write_export(kind, files(course_dir)[kind], tmp_path / f"{kind}-export")
    report = collect.collect(export, ASSIGNMENT, course=course_dir, roster=course_dir / "students.csv", due=DUE)

    submitted = course_dir / "submitted"
    assert sorted(p.name for p in submitted.iterdir()) == ["jane-doe", "omar-said"]
    jane = submitted / "jane-doe" / ASSIGNMENT
    assert sorted(p.name for p in jane.iterdir()) == [NOTEBOOK, NOTEBOOK.replace(".ipynb", ".pdf"), "timestamp.txt"]
    assert "an older attempt" not in (jane / NOTEBOOK).read_text()  # the latest hand-in won
    assert (jane / NOTEBOOK.replace(".ipynb", ".pdf")).read_bytes() == PDF
    assert (jane / "timestamp.txt").read_text() == "2025-03-01 10:00:00"
    assert (submitted / "omar-said" / ASSIGNMENT / NOTEBOOK).is_file()  # a bare notebook, renamed as released
    assert len(report.imported) == 2
    assert len(report.duplicates) == 1 and report.duplicates[0].startswith("jane-doe")
    assert len(report.late) == 1 and report.late[0].startswith("omar-said")
    assert len(report.unmatched) == 1 and "unknown" in report.unmatched[0].lower()
    assert len(report.problems) == 1 and "not a readable zip" in report.problems[0]
    text = str(report)
    assert "not matched to a student" in text and "not imported: 1" in text


def test_collected_hand_ins_grade(course_dir, tmp_path):
    export = write_export("canvas", files(course_dir)["canvas"], tmp_path / "export")
    collect.collect(export, ASSIGNMENT, course=course_dir, roster=course_dir / "students.csv")
    course.nbgrader("autograde", ASSIGNMENT, "--force", course=course_dir)
    assert scores(course_dir) == {"jane-doe": 2.0, "omar-said": 2.0}  # every autograded point of the short course


def test_an_older_export_never_replaces_a_newer_submission(course_dir, tmp_path):
    entries = files(course_dir)["canvas"][:1]
    newer = write_export("canvas", entries, tmp_path / "newer")
    collect.collect(newer, ASSIGNMENT, course=course_dir, roster=course_dir / "students.csv")
    older = write_export("canvas", [(entries[0][0], EARLY, entries[0][2])], tmp_path / "older")
    report = collect.collect(older, ASSIGNMENT, course=course_dir, roster=course_dir / "students.csv")
    assert report.imported == [] and report.kept[0].startswith("jane-doe")
    latest = write_export("canvas", [(entries[0][0], LATE, entries[0][2])], tmp_path / "latest")
    report = collect.collect(latest, ASSIGNMENT, course=course_dir, roster=course_dir / "students.csv")
    assert "moved to replaced/" in report.imported[0]
    kept = course_dir / "replaced" / "jane-doe" / ASSIGNMENT / "20250301-100000" / NOTEBOOK
    assert kept.is_file()  # nothing deleted
    assert (course_dir / "submitted" / "jane-doe" / ASSIGNMENT / "timestamp.txt").read_text() == "2025-03-03 08:00:00"


def test_without_a_roster_the_lms_names_become_student_ids(course_dir, tmp_path):
    export = write_export("blackboard", files(course_dir)["blackboard"], tmp_path / "export")
    report = collect.collect(export, ASSIGNMENT, course=course_dir)
    assert sorted(p.name for p in (course_dir / "submitted").iterdir()) == ["jdoe", "osaid", "zunknown"]
    assert report.unmatched == []
