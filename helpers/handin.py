"""Hand in a notebook: re-run it from a clean kernel, summarise the checks, export a PDF, zip both.

    python -m helpers.handin notebooks/01_pca_autoencoders/01_pca_autoencoders.ipynb

or, in the notebook's last cell, ``hand_in("01_pca_autoencoders.ipynb")``.
The notebook is run as a copy, in a scratch folder, in the budget in force
(``full`` unless ``COURSE_BUDGET`` says otherwise); the student's notebook is
never modified. The result is ``<name>-handin.zip`` next to the notebook,
holding the executed ``<name>.ipynb`` and ``<name>.pdf``.
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

AUTOMATED_RUN_ENV = "COURSE_HANDIN_RUN"  # set inside the re-run (and by tools) so the hand-in cell does not recurse
ANSWER_PLACEHOLDER = "YOUR ANSWER HERE"
PDF_TOOLS_HELP = """PDF export needs XeLaTeX and pandoc, which are not Python packages:
  Debian/Ubuntu: sudo apt-get install --no-install-recommends texlive-xetex texlive-fonts-recommended texlive-plain-generic fonts-dejavu-core pandoc
  macOS (Homebrew): brew install --cask mactex-no-gui font-dejavu && brew install pandoc
  conda: conda install -c conda-forge pandoc texlive-core   (or install TeX Live from tug.org)
Then run the hand-in again."""


class HandInError(RuntimeError):
    """The notebook cannot be handed in yet; the message says why and what to do."""


@dataclass
class Item:
    question: str
    status: str  # "passed", "failed", "empty", "answered"
    message: str = ""


def _automated() -> bool:
    return bool(os.environ.get(AUTOMATED_RUN_ENV) or os.environ.get("NBGRADER_EXECUTION"))


def _grading(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


def execute(path: Path, timeout: int = 1800):
    """Run a copy of the notebook at ``path`` from a clean kernel; return the executed notebook."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp) / "run"
        shutil.copytree(path.parent, scratch, ignore=shutil.ignore_patterns("*-handin.zip", ".ipynb_checkpoints"))
        previous = os.environ.get(AUTOMATED_RUN_ENV)
        os.environ[AUTOMATED_RUN_ENV] = "1"
        try:
            # The kernel's own log (e.g. "running over TCP without encryption") would land in the
            # student's terminal: only its errors are worth showing there.
            NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=True,
                           extra_arguments=["--IPKernelApp.log_level=ERROR"],
                           resources={"metadata": {"path": str(scratch)}}).execute()
        finally:
            if previous is None:
                os.environ.pop(AUTOMATED_RUN_ENV)
    return nb


def first_error(cell) -> str | None:
    for output in cell.get("outputs", []):
        if output.get("output_type") == "error":
            return f"{output.get('ename')}: {output.get('evalue')}"
    return None


def summarise(nb) -> tuple[list[Item], list[str]]:
    """Per-question results of an executed notebook, and the failures of cells that are not checks."""
    from .feedback import is_test_cell

    items, broken = [], []
    for index, cell in enumerate(nb.cells):
        meta = _grading(cell)
        error = first_error(cell) if cell.cell_type == "code" else None
        if is_test_cell(cell):
            items.append(Item(meta["grade_id"], "failed" if error else "passed", (error or "").split("\n")[0][:300]))
        elif meta.get("grade") and meta.get("solution") and cell.cell_type == "markdown":
            empty = ANSWER_PLACEHOLDER in cell.source or not cell.source.strip()
            items.append(Item(meta["grade_id"], "empty" if empty else "answered"))
        elif error:
            broken.append(f"cell {index + 1} ({meta.get('grade_id') or cell.get('id', '?')}) failed with {error.splitlines()[0][:300]}")
    return items, broken


def export_pdf(nb, target: Path) -> Path:
    """``jupyter nbconvert --to pdf`` (LaTeX) of an executed notebook."""
    missing = [tool for tool in ("xelatex", "pandoc") if shutil.which(tool) is None]
    if missing:
        raise HandInError(f"cannot make the PDF: {' and '.join(missing)} not found.\n{PDF_TOOLS_HELP}")
    from nbconvert import PDFExporter

    # handin.tex.j2: the check marks in a font that has them, and no \maketitle (the first heading is the title).
    # Its log only at errors: nbconvert warns "bibtex had problems" for every notebook without citations.
    quiet = logging.getLogger(f"{__name__}.nbconvert")
    quiet.setLevel(logging.ERROR)
    exporter = PDFExporter(template_file=str(Path(__file__).with_name("handin.tex.j2")), log=quiet)
    exporter.verbose = False
    try:
        body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": target.stem}})
    except Exception as error:
        raise HandInError(f"nbconvert could not make the PDF ({type(error).__name__}: {str(error)[:500]}).\n"
                          "A LaTeX error usually points at a markdown cell with a broken equation: fix it, then hand in again.") from error
    target.write_bytes(body)
    return target


def _add(bundle: zipfile.ZipFile, name: str, data: bytes) -> None:
    """Store a file readable by everyone once unpacked (``writestr`` alone gives mode 600)."""
    info = zipfile.ZipInfo(name, date_time=time.localtime()[:6])
    info.external_attr = 0o644 << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    bundle.writestr(info, data)


def report(items: list[Item]) -> str:
    marks = {"passed": "✔ passed", "failed": "✘ FAILED", "empty": "… still empty", "answered": "✎ answered"}
    width = max((len(i.question) for i in items), default=8)
    lines = [f"  {i.question:<{width}}  {marks[i.status]}" + (f" — {i.message}" if i.message else "") for i in items]
    passed = sum(i.status == "passed" for i in items)
    checks = sum(i.status in ("passed", "failed") for i in items)
    empty = sum(i.status == "empty" for i in items)
    lines.append(f"\n  visible checks passed: {passed}/{checks}; written answers still empty: {empty}")
    return "\n".join(lines)


def hand_in(notebook: str | os.PathLike, timeout: int = 1800) -> Path | None:
    """Re-run ``notebook``, print the per-question summary, write ``<name>-handin.zip``; return its path.

    Save the notebook first: the file on disk is what gets handed in.
    """
    if _automated():
        print("(automated run: the hand-in step is skipped here)")
        return None
    import nbformat  # here, not at the top: every notebook imports this module, most runs never hand in

    path = Path(notebook).resolve()
    if not path.is_file():
        raise HandInError(f"{path} not found: pass the notebook's file name, e.g. hand_in(\"01_pca_autoencoders.ipynb\").")
    from .budgets import budget_name

    print(f"Re-running {path.name} from a clean kernel in the '{budget_name()}' budget (this takes as long as "
          "running all cells)…", flush=True)
    executed = execute(path, timeout=timeout)
    items, broken = summarise(executed)
    print(report(items))
    if broken:
        raise HandInError("the notebook does not run from top to bottom:\n  " + "\n  ".join(broken) +
                          "\nFix these cells (Kernel → Restart Kernel and Run All Cells shows the same), then hand in again.")
    with tempfile.TemporaryDirectory() as tmp:
        pdf = export_pdf(executed, Path(tmp) / f"{path.stem}.pdf")
        archive = path.with_name(f"{path.stem}-handin.zip")
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as bundle:
            _add(bundle, path.name, nbformat.writes(executed).encode())
            _add(bundle, pdf.name, pdf.read_bytes())
    print(f"\nWrote {archive} ({archive.stat().st_size / 1e6:.1f} MB): {path.name} as run just now, and {pdf.name}. "
          "Hand in this archive.")
    return archive


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.handin", description=__doc__.split("\n")[0])
    parser.add_argument("notebook", help="the notebook to hand in (.ipynb)")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds allowed per cell (default 1800)")
    args = parser.parse_args(argv)
    try:
        hand_in(args.notebook, timeout=args.timeout)
    except HandInError as error:
        print(f"\nNot handed in: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
