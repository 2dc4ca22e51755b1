"""The student's hand-in: checks before any run, a proving run, the summary, a PDF from pip's tools, the archive;
the notebook itself untouched."""
import types
import zipfile
from pathlib import Path

import nbformat
import pytest
from pdf_text import letters, normalise, pdf_text_and_images

from helpers import course, handin

ROOT = Path(__file__).resolve().parents[1]
NAME = "01_pca_autoencoders.ipynb"


def solved_release() -> nbformat.NotebookNode:
    return course._solved_release(ROOT / "solutions" / NAME[:-6] / NAME, ROOT / "notebooks" / NAME[:-6] / NAME)


def grading_id(cell):
    return cell.metadata.get("nbgrader", {}).get("grade_id")


def small_notebook(*sources: str) -> nbformat.NotebookNode:
    return nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])


@pytest.fixture
def student_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_BUDGET", "grade")
    monkeypatch.delenv(handin.AUTOMATED_RUN_ENV, raising=False)
    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)
    return tmp_path


@pytest.fixture(scope="module")
def saved_01(tmp_path_factory):
    """Solved 01 as a student saves it after running it (here in the `grade` budget, to keep the test short)."""
    folder = tmp_path_factory.mktemp("run")
    nbformat.write(solved_release(), folder / NAME)
    return handin.execute(folder / NAME, budget="grade")


def test_hand_in_proves_the_run_and_hands_in_the_saved_notebook(saved_01, student_dir, capfd):
    nb = nbformat.from_dict(saved_01)
    written = next(c for c in nb.cells if grading_id(c) == "written_pca")
    written.source = "My own answer: the first component is quokka-sized body mass 4242."
    next(c for c in nb.cells if grading_id(c) == "test_pca").execution_count = 999  # re-run after the cells below
    path = student_dir / NAME
    nbformat.write(nb, path)
    before = path.read_bytes()

    archive = handin.hand_in(path)

    assert path.read_bytes() == before  # never modified
    out, err = capfd.readouterr()  # file descriptors: the kernel's own log would go to the terminal
    assert "visible checks passed: 8/8" in out and "still empty: 0" in out
    assert "'grade' budget in" in out and "s in all" in out and "notes 1 cell(s)" in out
    assert "encryption" not in out + err and "Kernel" not in err
    with zipfile.ZipFile(archive) as bundle:
        assert sorted(bundle.namelist()) == sorted([NAME, NAME.replace(".ipynb", ".pdf")])
        assert {info.external_attr >> 16 for info in bundle.infolist()} == {0o644}
        assert bundle.read(NAME) == before  # the student's saved notebook, outputs and all
        bundle.extractall(student_dir / "unpacked")
    text, images = pdf_text_and_images(student_dir / "unpacked" / NAME.replace(".ipynb", ".pdf"))
    assert normalise("quokka-sized body mass 4242") in text
    assert letters(text).count(letters("Dimensionality reduction: PCA and autoencoders")) == 1  # no second title
    assert letters("ran before test_pca above them was last run") in letters(text)  # the first page's note
    # The checks' output as the notebook shows it (check marks, not missing glyphs), the markdown's maths
    # (the autoencoder's f_φ, g_θ, a sum and a norm), and every saved figure.
    assert text.count("✔") >= 8 and "\ufffd" not in text
    assert all(symbol in text for symbol in ("φ", "θ", "∑", "‖", "→"))
    figures = sum("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))
    assert figures >= 3 and images == figures


def test_rerun_full_hands_in_the_new_run(student_dir, capfd):
    path = student_dir / "small.ipynb"
    nbformat.write(small_notebook("import os\nprint('budget in the run:', os.environ['COURSE_BUDGET'])"), path)
    archive = handin.hand_in(path, rerun="full")
    with zipfile.ZipFile(archive) as bundle:
        run = nbformat.reads(bundle.read("small.ipynb"), as_version=4)
        bundle.extract("small.pdf", student_dir)
    assert run.cells[0].outputs[0].text == "budget in the run: grade\n"  # the budget in force, as the notebook runs
    text, _ = pdf_text_and_images(student_dir / "small.pdf")
    assert "budget in the run: grade" in text and letters("outputs from the hand-in's own run") in letters(text)
    assert "as run just now" in capfd.readouterr().out


def test_a_failing_cell_stops_the_hand_in(student_dir):
    path = student_dir / "small.ipynb"
    nbformat.write(small_notebook("x = 1", "undefined_name + 1"), path)
    with pytest.raises(handin.HandInError, match=r"(?s)does not run from top to bottom.*NameError"):
        handin.hand_in(path)
    assert not list(student_dir.glob("*.zip"))


@pytest.fixture
def no_run(monkeypatch):
    """Any re-run fails the test: the checks under test must stop the hand-in before it."""
    monkeypatch.setattr(handin, "execute", lambda *a, **k: pytest.fail("re-ran although a check failed"))


def test_broken_pdf_tools_stop_the_hand_in_before_the_run(student_dir, no_run, monkeypatch):
    import typst

    def broken(*args, **kwargs):
        raise RuntimeError("no fonts")

    monkeypatch.setattr(typst, "compile", broken)
    nbformat.write(small_notebook("1"), student_dir / "a.ipynb")
    with pytest.raises(handin.HandInError, match=r"(?s)PDF tools do not work.*pip install pypandoc-binary typst"):
        handin.hand_in(student_dir / "a.ipynb")


def test_a_full_disk_stops_the_hand_in_before_the_run(student_dir, no_run, monkeypatch):
    monkeypatch.setattr(handin.shutil, "disk_usage", lambda place: types.SimpleNamespace(free=10_000_000))
    nbformat.write(small_notebook("1"), student_dir / "a.ipynb")
    with pytest.raises(handin.HandInError, match="only 10 MB free"):
        handin.hand_in(student_dir / "a.ipynb")


def test_an_unreadable_notebook_stops_the_hand_in_before_the_run(student_dir, no_run):
    (student_dir / "a.ipynb").write_text("{ half a notebook")
    with pytest.raises(handin.HandInError, match="cannot be read as a notebook"):
        handin.hand_in(student_dir / "a.ipynb")


def shell(count: int, history: list[str]):
    """IPython's shell as the hand-in cell sees it: this cell's count and the inputs run so far."""
    return types.SimpleNamespace(execution_count=count, user_ns={"In": [""] + history})


def test_cells_run_after_the_last_save_stop_the_hand_in(student_dir, no_run, monkeypatch):
    nb = small_notebook("x = 1", "y = 2")
    nb.cells[0].execution_count, nb.cells[1].execution_count = 1, 2
    path = student_dir / "a.ipynb"
    nbformat.write(nb, path)
    # Ran 1-2 (saved), then 3 and 4 (not saved), now the hand-in cell is 5.
    monkeypatch.setattr(handin, "_shell", lambda: shell(5, ["x = 1", "y = 2", "y = 3", "z = y", "hand_in('a.ipynb')"]))
    with pytest.raises(handin.HandInError, match=r"run after the notebook was last saved \(In \[3\] to \[4\]\).*Save it"):
        handin.hand_in(path)


def test_which_runs_count_as_unsaved():
    nb = small_notebook("x = 1", "y = 2")
    nb.cells[0].execution_count, nb.cells[1].execution_count = 1, 2
    assert handin.unsaved_runs(nb, shell(3, ["x = 1", "y = 2", "hand_in('a')"])) == []  # saved, then the hand-in
    assert handin.unsaved_runs(nb, shell(4, ["x = 1", "y = 2", "hand_in('a')", "hand_in('a')"])) == []  # a second try
    assert handin.unsaved_runs(nb, shell(2, ["hand_in('a')"])) == []  # saved from an earlier kernel, reopened
    assert handin.unsaved_runs(nb, None) == []  # the command line cannot tell


def test_notes_name_missing_and_out_of_order_outputs():
    nb = small_notebook("a = 1", "b = a", "c = b", "d = c", "", "hand_in('x')", "e = d")
    for cell, count in zip(nb.cells, (1, 6, 3, 4, None, None, None)):
        cell.execution_count = count
    notes = handin.output_notes(nb)
    assert [index for index, _ in notes] == [2, 6]  # the empty cell and the hand-in cell are not notes
    assert "`c = b` and the 1 code cell(s) after it ran before the cell starting `b = a`" in notes[0][1]
    assert "`e = d` has no output" in notes[1][1]
    marked = handin.annotate(nb, notes, "**Hand-in.**")
    assert [c.cell_type for c in marked.cells[:4]] == ["markdown", "code", "code", "markdown"]
    assert "2 saved output(s) to read with care" in marked.cells[0].source


def test_summary_names_failed_checks_and_empty_answers():
    nb = nbformat.read(ROOT / "notebooks" / NAME[:-6] / NAME, as_version=4)
    test = next(c for c in nb.cells if grading_id(c) == "test_pca")
    test.outputs = [nbformat.v4.new_output("error", ename="CheckFailed", evalue="components are not sorted", traceback=[])]
    items, broken = handin.summarise(nb)
    status = {i.question: (i.status, i.message) for i in items}
    assert status["test_pca"] == ("failed", "CheckFailed: components are not sorted")
    assert status["written_pca"][0] == "empty"
    assert broken == []


def test_hand_in_cell_does_nothing_inside_automated_runs(monkeypatch, tmp_path):
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    assert handin.hand_in(tmp_path / "missing.ipynb") is None


def test_the_hand_in_cell_imports_no_notebook_tooling():
    """Every notebook ends with ``from helpers.handin import hand_in``; in a graded run that import must stay
    cheap (nbformat pulls in jsonschema's format checkers, about a second per submission)."""
    import subprocess
    import sys

    code = ("import sys, helpers.handin; "
            "print(sorted(m for m in ('nbformat', 'nbconvert', 'nbclient', 'jsonschema', 'pypandoc', 'typst') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert out.strip() == "[]"
