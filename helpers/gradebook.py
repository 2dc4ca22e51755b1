"""The course's nbgrader gradebook, opened in one place (the instructor's side only)."""
from __future__ import annotations

from pathlib import Path


def open_gradebook(course: Path):
    """nbgrader's ``Gradebook`` on ``course/gradebook.db``, as a context manager."""
    from nbgrader.api import Gradebook

    return Gradebook(f"sqlite:///{course / 'gradebook.db'}")
