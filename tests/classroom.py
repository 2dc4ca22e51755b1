"""A short course for the classroom tests: 01's first task and one written answer, released with nbgrader.

Grading it takes seconds, so collecting, the exchange, the export and formgrader can be tested with
real nbgrader runs without training anything.
"""
from pathlib import Path

import nbformat

from helpers import course

ROOT = Path(__file__).resolve().parents[1]
ASSIGNMENT = "01_pca_autoencoders"
NOTEBOOK = f"{ASSIGNMENT}.ipynb"
KEEP = ("standardize", "test_standardize", "written_pca")


def short_course(folder: Path) -> Path:
    """Write the course directory into ``folder`` and release it; return ``folder``."""
    (folder / "nbgrader_config.py").write_bytes((ROOT / "nbgrader_config.py").read_bytes())
    nb = nbformat.read(ROOT / "solutions" / ASSIGNMENT / NOTEBOOK, as_version=4)
    ids = [c.metadata.get("nbgrader", {}).get("grade_id") for c in nb.cells]
    last = max(ids.index(grade_id) for grade_id in KEEP)
    # The title, the setup cell, the data, and the cells of the kept tasks with their instructions.
    nb.cells = [c for i, c in enumerate(nb.cells[:last + 1])
                if i < 4 or ids[i] in KEEP or (i + 1 < len(ids) and ids[i + 1] in KEEP and c.cell_type == "markdown")]
    (folder / "solutions" / ASSIGNMENT).mkdir(parents=True)
    nbformat.write(nb, folder / "solutions" / ASSIGNMENT / NOTEBOOK)
    course.release(folder)
    return folder


def solved(folder: Path, written: str = "PC1 is overall size.") -> nbformat.NotebookNode:
    """The short release with the reference code filled in and ``written`` as the written answer."""
    nb = course._solved_release(folder / "solutions" / ASSIGNMENT / NOTEBOOK, folder / "notebooks" / ASSIGNMENT / NOTEBOOK)
    for cell in nb.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") == "written_pca":
            cell.source = written
    return nb


def scores(folder: Path) -> dict[str, float]:
    """Autograded score per student of the short assignment, from the gradebook."""
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{folder / 'gradebook.db'}") as gradebook:
        return {s.student.id: s.score for s in gradebook.assignment_submissions(ASSIGNMENT)}
