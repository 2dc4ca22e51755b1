"""The student edition holds what students need and nothing of the solutions, and works from a clean copy."""
import os
import re
import shutil
import stat
import subprocess
import zipfile
from pathlib import Path

import nbformat
import pytest

from classroom import student_env

from helpers import course, edition

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = "notebooks/01_pca_autoencoders/01_pca_autoencoders.ipynb"
BLOCK = re.compile(r"### BEGIN (SOLUTION|HIDDEN TESTS)[^\n]*\n(.*?)^[ \t]*### END \1", re.S | re.M)
SHORTEST = 25  # shorter lines (`model.eval()`, `else:`) are idioms that any code may share
# Solution lines that the checkers share on purpose, allowed in helpers/checks/ only:
SHARED_WITH_CHECKS = {
    # 04's EnergyNet: its task text prescribes this network; check_trained_annealed trains the same one.
    "self.net = nn.Sequential(nn.Linear(3, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, 1))",
    "return self.net(torch.cat([x, sigma.log()], dim=1))[:, 0] / sigma[:, 0]",
    # Formulas the task text states outright (reverse drift f − g²·s; the VE SDE has no drift), which the
    # checks' own test SDEs need.
    "return self.drift(x, t) - self.diffusion(t) ** 2 * score_fn(x, t)",
    "return torch.zeros_like(x)",
    # Idioms of the checkers' own test models and samplers.
    "with torch.enable_grad():",
    "return self.net(x).squeeze(-1)",
    "device = next(model.parameters()).device",
}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return edition.build(tmp_path_factory.mktemp("dist"))


def secret_lines() -> set[str]:
    """Lines of solutions, hidden tests and model answers that the release does not show."""
    public = {line.strip() for path in (ROOT / "notebooks").rglob("*.ipynb")
              for cell in nbformat.read(path, as_version=4).cells for line in cell.source.splitlines()}
    secret = set()
    for source in (ROOT / "solutions").glob("*/*.ipynb"):
        for cell in nbformat.read(source, as_version=4).cells:
            if cell.cell_type == "markdown" and cell.metadata.get("nbgrader", {}).get("solution"):
                lines = cell.source.splitlines()  # a model answer
            else:
                lines = [line for block in BLOCK.finditer(cell.source) for line in block.group(2).splitlines()]
            secret |= {line.strip() for line in lines if len(line.strip()) >= SHORTEST} - public
    return secret


def text_lines(path: Path) -> set[str]:
    if path.suffix == ".ipynb":
        nb = nbformat.read(path, as_version=4)
        text = "\n".join(cell.source for cell in nb.cells)
    else:
        text = path.read_text(errors="ignore")
    return {line.strip() for line in text.splitlines()}


def test_every_helpers_module_is_either_for_students_or_for_instructors():
    names = {p.name for p in (ROOT / "helpers").iterdir() if p.name not in ("__pycache__",)}
    student, instructor = set(edition.STUDENT_MODULES), set(edition.INSTRUCTOR_MODULES)
    assert not student & instructor
    assert names <= student | instructor, f"classify {names - student - instructor} in helpers/edition.py"


def test_edition_holds_what_students_need(built):
    files = {p.relative_to(built).as_posix() for p in built.rglob("*") if p.is_file()}
    for name in course.assignments():
        assert f"notebooks/{name}/{name}.ipynb" in files
    assert {"README.md", "course", "requirements.txt", "environment.yml", "data/penguins.csv",
            "helpers/handin.py", "helpers/checks/a01.py", "jupyter-config/labconfig/page_config.json"} <= files
    assert not any(f.startswith("solutions/") or Path(f).name in edition.INSTRUCTOR_MODULES for f in files)
    assert "nbgrader" not in (built / "requirements.txt").read_text()
    with zipfile.ZipFile(built.with_suffix(".zip")) as bundle:
        assert {n.split("/", 1)[1] for n in bundle.namelist()} == files
        assert bundle.getinfo(f"{built.name}/course").external_attr >> 16 & stat.S_IXUSR


def test_edition_leaks_no_solution_hidden_test_or_model_answer(built):
    secret = secret_lines()
    assert len(secret) > 100  # the solutions were read
    for path in built.rglob("*"):
        if not path.is_file() or path.suffix in (".csv", ".zip"):
            continue
        allowed = SHARED_WITH_CHECKS if path.parent.name == "checks" else set()
        leaked = (text_lines(path) & secret) - allowed
        assert not leaked, f"{path.relative_to(built)} shows solution lines: {sorted(leaked)[:3]}"
    for path in (built / "notebooks").rglob("*.ipynb"):
        text = path.read_text()
        assert "Model answer" not in text and "BEGIN HIDDEN TESTS" not in text and "BEGIN SOLUTION" not in text


@pytest.fixture(scope="module")
def student_copy(built, tmp_path_factory):
    """The zip unpacked as a student would, set up with its own README command, 01 solved."""
    home = tmp_path_factory.mktemp("student")
    with zipfile.ZipFile(built.with_suffix(".zip")) as bundle:
        bundle.extractall(home)
    folder = home / built.name
    (folder / "course").chmod(0o755)  # extractall drops the mode bits
    solved = course._solved_release(ROOT / "solutions" / Path(NOTEBOOK).parent.name / Path(NOTEBOOK).name, ROOT / NOTEBOOK)
    solved.cells.insert(2, nbformat.v4.new_code_cell("print('helpers from', helpers.__file__)"))
    nbformat.write(solved, folder / NOTEBOOK)
    # Reusing this environment (COURSE_VENV) keeps `./course setup` to a check that all is installed.
    env = student_env()
    run = subprocess.run(["./course", "setup"], cwd=folder, env=env, text=True, capture_output=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    return folder


@pytest.mark.skipif(not (shutil.which("xelatex") and shutil.which("pandoc")) and not os.environ.get("CI"),
                    reason="XeLaTeX and pandoc are not installed (CI installs them; see README)")
def test_edition_hands_in_a_notebook_from_a_clean_copy(student_copy):
    run = subprocess.run(["./course", "handin", NOTEBOOK], cwd=student_copy, env=student_env(), text=True,
                         capture_output=True, timeout=900)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "visible checks passed: 8/8" in run.stdout
    assert "encryption" not in run.stdout + run.stderr
    archive = student_copy / NOTEBOOK.replace(".ipynb", "-handin.zip")
    with zipfile.ZipFile(archive) as bundle:
        executed = nbformat.reads(bundle.read("01_pca_autoencoders.ipynb"), as_version=4)
    outputs = "".join(o.get("text", "") for c in executed.cells for o in c.get("outputs", []))
    assert "✔" in outputs and "budget 'grade'" in outputs
    assert f"helpers from {student_copy / 'helpers'}" in outputs  # the edition's, not this repository's


def test_a_release_notebook_with_outputs_is_refused(tmp_path):
    course_copy = tmp_path / "course"
    shutil.copytree(ROOT / "notebooks", course_copy / "notebooks")
    path = course_copy / NOTEBOOK
    nb = nbformat.read(path, as_version=4)
    next(c for c in nb.cells if c.cell_type == "code").outputs = [nbformat.v4.new_output("stream", text="my answer")]
    nbformat.write(nb, path)
    with pytest.raises(SystemExit, match="carry outputs from a run"):
        edition.release_notebooks(course_copy)
