"""Hand in a notebook: prove that it runs, summarise the checks, make a PDF, zip the notebook and the PDF.

    python -m helpers.handin notebooks/01_pca_autoencoders/01_pca_autoencoders.ipynb [--rerun full]

or, in the notebook's last cell, ``hand_in("01_pca_autoencoders.ipynb")``.

What can fail is checked first, before anything slow: the notebook is there and readable, it is saved
(from the notebook's own kernel: no cell run since the file was last written), the PDF tools import and
work, and there is disk space for the run and the archive. Then, by default (``rerun="grade"``), a copy
runs top to bottom from a clean kernel in the ``grade`` budget (tiny models, what the autograder runs):
proof that the notebook runs, and the per-question summary. The PDF shows the student's own saved
outputs (their ``full``-budget figures) with a note on its first page for every cell whose output is
missing or older than its code (execution counts out of order), and the archive holds the saved
notebook byte for byte. ``rerun="full"`` re-runs everything in the budget in force (``full`` unless
``COURSE_BUDGET`` says otherwise) and hands in that run, as the notebook is then. The student's notebook
is never modified. The result is ``<name>-handin.zip`` next to the notebook, holding ``<name>.ipynb``
and ``<name>.pdf`` (made by ``helpers.pdf_export``: pandoc and Typst from pip, no TeX).

On Google Colab the notebook lives in the browser, not on the machine: the hand-in cell asks the browser
for it (what the student sees, saved or not, is what is handed in), writes it to ``hand-in/<name>`` in the
working folder (a copy of the hand-in's own), hands that in as above, and offers the archive for download.
"""
from __future__ import annotations

import argparse
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
RERUNS = ("grade", "full")
HAND_IN_CALL = "hand_in("  # the hand-in cell: its own output is never saved before it runs
SPARE_BYTES = 300_000_000  # the kernel's scratch files, a figure cache, a PDF: beyond the copies counted
PDF_TOOLS_HELP = ("The PDF is made with pandoc and Typst, which pip installs: `./course setup` (or "
                  "`python course.py setup`) installs them, or `pip install pypandoc-binary typst`.")


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


def execute(path: Path, timeout: int = 1800, budget: str | None = None):
    """Run a copy of the notebook at ``path`` from a clean kernel (in ``budget`` if given, else the budget in
    force); return the executed notebook."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp) / "run"
        shutil.copytree(path.parent, scratch, ignore=shutil.ignore_patterns("*-handin.zip", ".ipynb_checkpoints"))
        saved = {name: os.environ.get(name) for name in (AUTOMATED_RUN_ENV, "COURSE_BUDGET")}
        os.environ[AUTOMATED_RUN_ENV] = "1"
        if budget:
            os.environ["COURSE_BUDGET"] = budget  # the kernel inherits this process's environment
        try:
            # The kernel's own log (e.g. "running over TCP without encryption") would land in the
            # student's terminal: only its errors are worth showing there.
            NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=True,
                           extra_arguments=["--IPKernelApp.log_level=ERROR"],
                           resources={"metadata": {"path": str(scratch)}}).execute()
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
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


def export_pdf(nb, target: Path, folder: Path | None = None) -> Path:
    """The notebook's PDF (``helpers.pdf_export``: pandoc and Typst); ``folder``, the notebook's, holds the
    images its markdown links to."""
    from .pdf_export import PDFError, TypstPDFExporter

    try:
        body, _ = TypstPDFExporter().from_notebook_node(nb, resources={"metadata": {"name": target.stem,
                                                                                   "path": str(folder or "")}})
    except (PDFError, RuntimeError, OSError) as error:  # pypandoc reports pandoc's errors as RuntimeError
        raise HandInError(f"the PDF could not be made ({str(error)[:600]}).\n"
                          "A markdown cell with a broken equation or table is the usual cause: fix it, save, and hand in again.") from error
    target.write_bytes(body)
    return target


def check_pdf_tools() -> None:
    """pandoc and Typst import and typeset a line: the PDF cannot fail for want of them after a long run."""
    try:
        import pypandoc
        import typst

        with tempfile.TemporaryDirectory() as tmp:
            probe = Path(tmp) / "probe.typ"
            probe.write_text(pypandoc.convert_text("✔ $x^2$", "typst", format="markdown"), encoding="utf-8")
            typst.compile(str(probe), root=tmp, ignore_system_fonts=True)
    except (ImportError, OSError, RuntimeError) as error:
        raise HandInError(f"the PDF tools do not work here ({type(error).__name__}: {str(error)[:300]}).\n{PDF_TOOLS_HELP}") from error


def check_disk(path: Path) -> None:
    """Room for the scratch copy of the notebook's folder and its run, and for the archive beside the notebook."""
    folder = sum(p.stat().st_size for p in path.parent.rglob("*") if p.is_file() and not p.name.endswith("-handin.zip"))
    needs = {Path(tempfile.gettempdir()): folder + 2 * path.stat().st_size + SPARE_BYTES,
             path.parent: 3 * path.stat().st_size}  # the archive: the notebook, a PDF of about its size
    for place, needed in needs.items():
        free = shutil.disk_usage(place).free
        if free < needed:
            raise HandInError(f"only {free / 1e6:.0f} MB free in {place}; the hand-in needs about {needed / 1e6:.0f} MB there. "
                              "Free some space, then hand in again.")


def unsaved_runs(nb, shell=None) -> list[int]:
    """Execution counts of cells the notebook's kernel ran after the file on disk was last saved.

    Only inside the notebook's own kernel (``shell``, IPython's) can this be told: its cells are numbered
    in the order they ran, and a saved file holds the count of each cell as run. Earlier hand-in cells are
    left out (their output is not the student's work); so is a file saved from an earlier kernel, whose
    counts run past this kernel's.
    """
    if shell is None:
        return []
    history = shell.user_ns.get("In", [])
    saved = max((c.get("execution_count") or 0 for c in nb.cells if c.cell_type == "code"), default=0)
    current = shell.execution_count  # the hand-in cell's own count while it runs
    if saved >= current:
        return []
    return [k for k in range(saved + 1, current) if k < len(history) and HAND_IN_CALL not in history[k]]


def _describe(cell) -> str:
    grade_id = _grading(cell).get("grade_id")
    first = next((line.strip() for line in cell.source.splitlines() if line.strip()), "")
    return f"`{grade_id}`" if grade_id else f"the cell starting `{first[:60]}`"


def output_notes(nb) -> list[tuple[int, str]]:
    """(cell index, note) for saved outputs a reader should not trust: cells never run, and cells run before a
    cell above them was (last) run, whose output may predate the code and results above. Cells that ran
    before the same later re-run are one note, at the first of them."""
    notes, latest, latest_cell, group = [], 0, None, None
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or not cell.source.strip() or HAND_IN_CALL in cell.source:
            continue
        count = cell.get("execution_count")
        if count is None:
            notes.append((index, f"{_describe(cell)} has no output: it was not run before the notebook was saved."))
        elif count < latest:
            if group and group[0] is latest_cell:
                group[2] += 1
            else:
                group = [latest_cell, index, 1, _describe(cell)]
                notes.append(group)
        if count is not None and count > latest:
            latest, latest_cell = count, cell
    return [note if isinstance(note, tuple) else
            (note[1], f"{note[3]}{f' and the {note[2] - 1} code cell(s) after it' if note[2] > 1 else ''} ran before "
                      f"{_describe(note[0])} above {'them' if note[2] > 1 else 'it'} was last run (In [{note[0].execution_count}]): "
                      f"{'their outputs' if note[2] > 1 else 'its output'} may not match the code above.")
            for note in notes]


def annotate(nb, notes: list[tuple[int, str]], header: str):
    """A copy of ``nb`` for the PDF: each note just above its cell, and all of them with ``header`` up front."""
    import nbformat

    marked = nbformat.from_dict(nb)
    for index, note in sorted(notes, reverse=True):
        marked.cells.insert(index, nbformat.v4.new_markdown_cell(f"> **⚠ Hand-in note:** {note}"))
    lines = [header] + ([f"\n**{len(notes)} saved output(s) to read with care** (each is marked again at its cell):\n"]
                        + [f"- {note}" for _, note in notes] if notes else [])
    marked.cells.insert(0, nbformat.v4.new_markdown_cell("> " + "\n> ".join("\n".join(lines).splitlines())))
    return marked


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


def _shell():
    """The IPython shell when the hand-in runs in a notebook's kernel, else None (the command line)."""
    ipython = sys.modules.get("IPython")
    return ipython.get_ipython() if ipython else None


def colab_notebook(name: str) -> Path:
    """Colab: the notebook as the browser holds it, written to ``hand-in/<name>``; return that path."""
    import nbformat
    from google.colab import _message  # Colab's own channel to the browser; its notebook is not on disk

    reply = _message.blocking_request("get_ipynb", timeout_sec=120)  # None: no answer in time
    if not reply or "ipynb" not in reply:
        raise HandInError("the browser did not send the notebook (Colab's page busy or closed?): run this cell again.")
    nb = nbformat.from_dict(reply["ipynb"])
    path = Path.cwd() / "hand-in" / Path(name).name
    path.parent.mkdir(exist_ok=True)
    nbformat.write(nb, path)
    return path


def preflight(path: Path, shell=None):
    """Everything that can stop the hand-in, checked before any run; returns the saved notebook."""
    import nbformat

    if not path.is_file():
        raise HandInError(f"{path} not found: pass the notebook's file name, e.g. hand_in(\"01_pca_autoencoders.ipynb\").")
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception as error:  # not JSON, not a notebook: nbformat's own exceptions vary
        raise HandInError(f"{path.name} cannot be read as a notebook ({type(error).__name__}: {str(error)[:200]}).") from error
    unsaved = unsaved_runs(nb, shell)
    if unsaved:
        raise HandInError(f"cells were run after the notebook was last saved (In [{unsaved[0]}]"
                          f"{f' to [{unsaved[-1]}]' if len(unsaved) > 1 else ''}): the file on disk is what is handed in. "
                          "Save it (Ctrl+S / Cmd+S), then run this cell again.")
    check_pdf_tools()
    check_disk(path)
    return nb


def hand_in(notebook: str | os.PathLike, timeout: int = 1800, rerun: str = "grade") -> Path | None:
    """Check, re-run (``rerun``: ``grade`` or ``full``), summarise, and write ``<name>-handin.zip``; return its path.

    Save the notebook first: the file on disk is what gets handed in.
    """
    if _automated():
        print("(automated run: the hand-in step is skipped here)")
        return None
    if rerun not in RERUNS:
        raise HandInError(f"rerun={rerun!r}: use one of {', '.join(RERUNS)}.")
    import nbformat  # here, not at the top: every notebook imports this module, most runs never hand in

    from .budgets import budget_name
    from .runtime import on_colab

    began = time.perf_counter()
    path = colab_notebook(notebook) if on_colab() else Path(notebook).resolve()
    saved = preflight(path, None if on_colab() else _shell())  # Colab's copy is the browser's: nothing unsaved
    budget = "grade" if rerun == "grade" else budget_name()
    print(f"Checked: {path.name} is saved and readable, the PDF tools work, disk space is enough.\n"
          f"Running a copy from a clean kernel in the '{budget}' budget"
          + (" (proof that it runs top to bottom; your saved outputs go in the PDF)…" if rerun == "grade"
             else " (this takes as long as running all cells; this run is what gets handed in)…"), flush=True)
    start = time.perf_counter()
    executed = execute(path, timeout=timeout, budget=budget)
    run_seconds = time.perf_counter() - start
    items, broken = summarise(executed)
    print(report(items))
    if broken:
        raise HandInError("the notebook does not run from top to bottom:\n  " + "\n  ".join(broken) +
                          "\nFix these cells (Kernel → Restart Kernel and Run All Cells shows the same), then hand in again.")
    passed = sum(i.status == "passed" for i in items)
    checks = sum(i.status in ("passed", "failed") for i in items)
    ran = f"a copy ran top to bottom from a clean kernel in the '{budget}' budget in {run_seconds:.0f} s (visible checks passed: {passed}/{checks})"
    if rerun == "grade":
        handed, notes = saved, output_notes(saved)
        stamp = time.strftime("%Y-%m-%d %H:%M", time.localtime(path.stat().st_mtime))
        header = f"**Hand-in.** Outputs as saved by the student (notebook saved {stamp}); at hand-in, {ran}."
        data = path.read_bytes()
    else:
        handed, notes = executed, []
        header = f"**Hand-in.** Outputs from the hand-in's own run: {ran}."
        data = nbformat.writes(executed).encode()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        pdf = export_pdf(annotate(handed, notes, header), Path(tmp) / f"{path.stem}.pdf", folder=path.parent)
        pdf_seconds, pdf_size = time.perf_counter() - start, pdf.stat().st_size
        archive = path.with_name(f"{path.stem}-handin.zip")
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as bundle:
            _add(bundle, path.name, data)
            _add(bundle, pdf.name, pdf.read_bytes())
    print(f"\nRun: {ran}.")
    print(f"PDF: {'your saved outputs' if rerun == 'grade' else 'the outputs of this run'}, "
          f"made in {pdf_seconds:.0f} s ({pdf_size / 1e6:.1f} MB)"
          + (f"; its first page notes {len(notes)} cell(s) whose saved output is missing or older than its code:\n  "
             + "\n  ".join(note for _, note in notes) if notes else "."))
    print(f"Wrote {archive} ({archive.stat().st_size / 1e6:.1f} MB): {path.name} "
          f"{'as you saved it' if rerun == 'grade' else 'as run just now'}, and {pdf.name}; "
          f"{time.perf_counter() - began:.0f} s in all. Hand in this archive.")
    if on_colab():
        from google.colab import files

        print("Your browser now downloads it (allow downloads from colab.research.google.com if it asks).")
        files.download(str(archive))
    return archive


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.handin", description=__doc__.split("\n")[0])
    parser.add_argument("notebook", help="the notebook to hand in (.ipynb)")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds allowed per cell (default 1800)")
    parser.add_argument("--rerun", choices=RERUNS, default="grade",
                        help="grade (default): a quick run proves the notebook runs, the PDF shows your saved outputs; "
                             "full: re-run everything in your budget and hand in that run")
    args = parser.parse_args(argv)
    try:
        hand_in(args.notebook, timeout=args.timeout, rerun=args.rerun)
    except HandInError as error:
        print(f"\nNot handed in: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
