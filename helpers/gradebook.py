"""Where grading's results live (the instructor's side only): nbgrader's gradebook, and each submission's record.

The record, ``autograded/<student>/<assignment>/grading.json``, is written by
:func:`helpers.grading._record`: flags and their reasons, limits hit, events,
each test cell's verdict, the flags an instructor cleared and the version of
what graded it. Its texts may quote a submission, so readers treat them as
untrusted text.
"""
from __future__ import annotations

import json
from pathlib import Path


def open_gradebook(course: Path):
    """nbgrader's ``Gradebook`` on ``course/gradebook.db``, as a context manager."""
    from nbgrader.api import Gradebook

    return Gradebook(f"sqlite:///{course / 'gradebook.db'}")


def record_path(course: Path, student: str, assignment: str) -> Path:
    return course / "autograded" / student / assignment / "grading.json"


def read_record(path: Path) -> dict:
    """A submission's grading record; empty when there is none or it cannot be read."""
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}
