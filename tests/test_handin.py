"""The student's hand-in: re-run, per-question summary, PDF, archive; the notebook itself untouched."""
import os
import shutil
import zipfile
from pathlib import Path

import nbformat
import pytest
from pdf_text import letters, normalise, pdf_text_and_images

from helpers import course, handin

ROOT = Path(__file__).resolve().parents[1]
NAME = "01_pca_autoencoders.ipynb"
PDF_TOOLS = shutil.which("xelatex") and shutil.which("pandoc")
needs_tex = pytest.mark.skipif(not PDF_TOOLS and not os.environ.get("CI"),
                               reason="XeLaTeX and pandoc are not installed (CI installs them; see README)")


def solved_release() -> nbformat.NotebookNode:
    return course._solved_release(ROOT / "solutions" / NAME[:-6] / NAME, ROOT / "notebooks" / NAME[:-6] / NAME)


def grading_id(cell):
    return cell.metadata.get("nbgrader", {}).get("grade_id")


@pytest.fixture
def student_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_BUDGET", "grade")
    monkeypatch.delenv(handin.AUTOMATED_RUN_ENV, raising=False)
    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)
    return tmp_path


@needs_tex
def test_hand_in_writes_archive_with_notebook_and_pdf(student_dir, capfd, caplog):
    nb = solved_release()
    written = next(c for c in nb.cells if grading_id(c) == "written_pca")
    written.source = "My own answer: the first component is quokka-sized body mass 4242."
    path = student_dir / NAME
    nbformat.write(nb, path)
    before = path.read_bytes()

    archive = handin.hand_in(path)

    assert path.read_bytes() == before  # never modified
    out, err = capfd.readouterr()  # file descriptors: the kernel's own log would go to the terminal
    assert "visible checks passed: 8/8" in out and "still empty: 0" in out
    assert "encryption" not in out + err and "Kernel" not in err
    assert not [r for r in caplog.records if "bibtex" in r.getMessage()]  # nbconvert's noise stays out too
    with zipfile.ZipFile(archive) as bundle:
        assert sorted(bundle.namelist()) == sorted([NAME, NAME.replace(".ipynb", ".pdf")])
        assert {info.external_attr >> 16 for info in bundle.infolist()} == {0o644}
        bundle.extractall(student_dir / "unpacked")
    executed = nbformat.read(student_dir / "unpacked" / NAME, as_version=4)
    assert any(o.get("output_type") == "display_data" for c in executed.cells for o in c.get("outputs", []))
    text, images = pdf_text_and_images(student_dir / "unpacked" / NAME.replace(".ipynb", ".pdf"))
    assert normalise("quokka-sized body mass 4242") in text
    assert letters(text).count(letters("Dimensionality reduction: PCA and autoencoders")) == 1  # no second title
    # The checks' output as the notebook shows it: check marks, not missing glyphs.
    assert text.count("✔") >= 8 and "\ufffd" not in text
    assert images >= 1


def test_a_failing_cell_stops_the_hand_in(student_dir):
    nb = solved_release()
    nb.cells.insert(3, nbformat.v4.new_code_cell("undefined_name + 1"))
    path = student_dir / NAME
    nbformat.write(nb, path)
    with pytest.raises(handin.HandInError, match=r"(?s)does not run from top to bottom.*NameError"):
        handin.hand_in(path)
    assert not list(student_dir.glob("*.zip"))


def test_missing_pdf_tools_say_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setattr(handin.shutil, "which", lambda tool: None)
    with pytest.raises(handin.HandInError, match=r"(?s)xelatex and pandoc not found.*apt-get install"):
        handin.export_pdf(nbformat.v4.new_notebook(), tmp_path / "x.pdf")


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
            "print(sorted(m for m in ('nbformat', 'nbconvert', 'nbclient', 'jsonschema') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert out.strip() == "[]"
