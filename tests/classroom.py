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
    folder.mkdir(parents=True, exist_ok=True)
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


def without_markers(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The filled-in answers as a student would write them: without nbgrader's solution markers."""
    for cell in nb.cells:
        cell.source = "\n".join(line for line in cell.source.splitlines() if "### BEGIN" not in line and "### END" not in line)
    return nb


def student_env(**extra) -> dict:
    """A student's shell: this environment's packages (COURSE_VENV), nothing of this repository on the path."""
    import os
    import sys

    from helpers import data

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "JUPYTER_CONFIG_PATH")}
    return dict(env, COURSE_VENV=sys.prefix, COURSE_DATA_DIR=str(data.data_dir()), COURSE_BUDGET="grade", **extra)


def solved(folder: Path, written: str = "PC1 is overall size.") -> nbformat.NotebookNode:
    """The short release with the reference code filled in and ``written`` as the written answer."""
    nb = course._solved_release(folder / "solutions" / ASSIGNMENT / NOTEBOOK, folder / "notebooks" / ASSIGNMENT / NOTEBOOK)
    for cell in without_markers(nb).cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") == "written_pca":
            cell.source = written
    return nb


def scores(folder: Path) -> dict[str, float]:
    """Autograded score per student of the short assignment, from the gradebook."""
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{folder / 'gradebook.db'}") as gradebook:
        return {s.student.id: s.score for s in gradebook.assignment_submissions(ASSIGNMENT)}


COURSE_ID = "ull"


def exchange(*args: str, cwd: Path, root: Path) -> str:
    """One nbgrader exchange command, as the instructor (in the course) or a student (in their home)."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    run = subprocess.run([sys.executable, "-m", "nbgrader", *args, f"--Exchange.root={root}",
                          f"--CourseDirectory.course_id={COURSE_ID}"], cwd=cwd, env=env, text=True, capture_output=True)
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout + run.stderr


def hub_round_trip(folder: Path) -> tuple[Path, list[str]]:
    """release_assignment → fetch_assignment → submit → collect → autograde (see conftest.hub_course)."""
    course_dir = short_course(folder / "course")
    root = folder / "exchange"
    root.mkdir()
    logs = [exchange("release_assignment", ASSIGNMENT, cwd=course_dir, root=root)]
    for student, nb in (("alice", solved(course_dir)), ("bob", None)):
        home = folder / "home" / student
        home.mkdir(parents=True)
        logs.append(exchange("fetch_assignment", ASSIGNMENT, cwd=home, root=root))
        if nb is not None:
            nbformat.write(nb, home / ASSIGNMENT / NOTEBOOK)
        # On a hub each student is an OS user, whose name nbgrader takes; here one user plays both.
        logs.append(exchange("submit", ASSIGNMENT, f"--student={student}", cwd=home, root=root))
    logs.append(exchange("collect", ASSIGNMENT, cwd=course_dir, root=root))
    course.nbgrader("autograde", ASSIGNMENT, "--force", course=course_dir)
    return course_dir, logs
