"""The student edition holds what students need and nothing of the solutions, and works from a clean copy."""
import importlib.util
import json
import re
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path, PureWindowsPath

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
    "optimizer = torch.optim.Adam(model.parameters(), lr=lr)",  # 04's DSM probe trains as the notebook says
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
    assert {"README.md", "course", "course.py", "requirements.txt", "environment.yml", "data/penguins.csv",
            "helpers/handin.py", "helpers/pdf_export.py", "helpers/checks/a01.py",
            "jupyter-config/labconfig/page_config.json"} <= files
    assert not any(f.startswith("solutions/") or f.startswith("helpers/") and Path(f).name in edition.INSTRUCTOR_MODULES
                   for f in files)
    assert "nbgrader" not in (built / "requirements.txt").read_text()
    with zipfile.ZipFile(built.with_suffix(".zip")) as bundle:
        assert {n.split("/", 1)[1] for n in bundle.namelist()} == files
        assert bundle.getinfo(f"{built.name}/course").external_attr >> 16 & stat.S_IXUSR


def test_the_readmes_quote_the_measured_notebook_times(built):
    """One table of times (benchmarks/notebook-times.json) for both READMEs, so that neither drifts."""
    times = edition.notebook_times("full")
    assert re.fullmatch(r"01 [\d.]+ (s|min), 02 .*, 03 .*, 04 [\d.]+ (s|min)", times)
    assert f"whole notebook: {times}." in (built / "README.md").read_text()
    assert edition.TIMES_MARK in (ROOT / "edition" / "README.md").read_text()
    assert times in (ROOT / "README.md").read_text()


def test_the_notebook_benchmark_records_only_clean_runs(tmp_path):
    spec = importlib.util.spec_from_file_location("notebook_benchmark", ROOT / "benchmarks" / "notebooks.py")
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    table = tmp_path / "times.json"
    table.write_text('{"full": {"01": 180, "02": 72}}')
    benchmark.record([("01_pca_autoencoders", "nbclient, full", 171.4, 0), ("02_kmeans_gmm_ood", "nbclient, full", 9.0, 1),
                      ("03_energy_based_models", "nbgrader autograde, grade", 50.0, 0),
                      ("03_energy_based_models", "nbclient, grade", 24.6, 0)], table)
    assert json.loads(table.read_text()) == {"full": {"01": 171, "02": 72}, "grade": {"03": 25}}


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


def test_edition_hands_in_a_notebook_from_a_clean_copy(student_copy):
    """``./course handin --rerun full``: the notebook as the hand-in ran it, with the edition's own helpers."""
    run = subprocess.run(["./course", "handin", NOTEBOOK, "--rerun", "full"], cwd=student_copy, env=student_env(),
                         text=True, capture_output=True, timeout=900)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "visible checks passed: 8/8" in run.stdout
    assert "encryption" not in run.stdout + run.stderr
    archive = student_copy / NOTEBOOK.replace(".ipynb", "-handin.zip")
    with zipfile.ZipFile(archive) as bundle:
        executed = nbformat.reads(bundle.read("01_pca_autoencoders.ipynb"), as_version=4)
        assert bundle.read("01_pca_autoencoders.pdf").startswith(b"%PDF")
    outputs = "".join(o.get("text", "") for c in executed.cells for o in c.get("outputs", []))
    assert "✔" in outputs and "budget 'grade'" in outputs
    assert f"helpers from {student_copy / 'helpers'}" in outputs  # the edition's, not this repository's


def test_python_entry_hands_in_the_saved_notebook_from_anywhere(student_copy):
    """``python course.py handin`` (the Windows and macOS command), run from the notebook's folder: a quick run
    in the grade budget, the saved notebook in the archive, and a PDF that notes the cells never run."""
    folder = (student_copy / NOTEBOOK).parent
    saved = (student_copy / NOTEBOOK).read_bytes()
    run = subprocess.run([sys.executable, str(student_copy / "course.py"), "handin", Path(NOTEBOOK).name], cwd=folder,
                         env=student_env(), text=True, capture_output=True, timeout=900)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "'grade' budget in" in run.stdout and "visible checks passed: 8/8" in run.stdout
    assert "has no output: it was not run" in run.stdout  # this copy was never run in JupyterLab
    with zipfile.ZipFile(folder / "01_pca_autoencoders-handin.zip") as bundle:
        assert bundle.read("01_pca_autoencoders.ipynb") == saved
        assert all("\\" not in name for name in bundle.namelist())


def load_course_script():
    """edition/course.py, the student's cross-platform entry, imported as a module (it is not in a package)."""
    spec = importlib.util.spec_from_file_location("course_script", ROOT / "edition" / "course.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_course_script_finds_the_venv_and_paths_on_windows_and_elsewhere():
    script = load_course_script()
    venv = Path("C:/Users/ada/course/.venv")
    assert script.venv_python(venv, windows=True) == venv / "Scripts" / "python.exe"
    assert script.venv_python(venv, windows=False) == venv / "bin" / "python"
    env = script.environment(venv, {"PATH": r"C:\Windows\system32", "PYTHONPATH": r"D:\mine"}, windows=True)
    assert env["PATH"] == f"{venv / 'Scripts'};C:\\Windows\\system32"
    assert env["PYTHONPATH"] == f"{script.HERE};D:\\mine"
    assert env["JUPYTER_CONFIG_PATH"] == str(script.HERE / "jupyter-config")
    assert script.environment(venv, {"PATH": "/usr/bin"}, windows=False)["PATH"] == f"{venv / 'bin'}:/usr/bin"


@pytest.mark.parametrize("version, accepted", [((3, 9, 18), False), ((3, 10, 0), True), ((3, 11, 7), True),
                                               ((3, 13, 1), True), ((3, 14, 0), False)])
def test_course_script_accepts_python_310_to_313(version, accepted):
    script = load_course_script()
    if accepted:
        script.check_python(version)
    else:
        with pytest.raises(SystemExit, match=r"use Python 3\.10 to 3\.13"):
            script.check_python(version)


def test_course_script_explains_itself(capsys):
    script = load_course_script()
    assert script.main(["help"]) == 0 and "python course.py handin NOTEBOOK" in capsys.readouterr().out
    assert script.main(["hand-in"]) == 2


def test_edition_zip_members_use_forward_slashes():
    """Zip members are POSIX paths whichever system builds the edition (Windows paths have backslashes)."""
    assert edition.member_name("learning-without-labels-student", PureWindowsPath(r"helpers\checks\a01.py")) == \
        "learning-without-labels-student/helpers/checks/a01.py"


def test_a_release_notebook_with_outputs_is_refused(tmp_path):
    course_copy = tmp_path / "course"
    shutil.copytree(ROOT / "notebooks", course_copy / "notebooks")
    path = course_copy / NOTEBOOK
    nb = nbformat.read(path, as_version=4)
    next(c for c in nb.cells if c.cell_type == "code").outputs = [nbformat.v4.new_output("stream", text="my answer")]
    nbformat.write(nb, path)
    with pytest.raises(SystemExit, match="carry outputs from a run"):
        edition.release_notebooks(course_copy)
