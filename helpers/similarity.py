"""Which students' answers look copied from each other (or from an earlier term), on this machine only.

    python -m helpers.similarity ASSIGNMENT [--archive DIR] [--top N]

Each student's answer code is the code of the release's solution cells (matched by grade id) and the
code cells the student added, from ``submitted/<student>/<assignment>/*.ipynb``, in the release's order.
The whole release's code is boilerplate: its fingerprints are removed first, so a student who changed
nothing, or kept a given stub, matches nobody. Fingerprints are copydetect's (MOSS-style winnowing
over pygments tokens with every name replaced by one letter and comments and layout dropped): renamed
variables, reordered functions and changed comments leave them unchanged. Only pairs that share a
fingerprint are compared; winnowing keeps one fingerprint per window, so any match of ``GUARANTEE``
filtered characters is always found. copydetect hashes with Python's ``hash()``, salted per process:
``./kit similarity`` sets ``PYTHONHASHSEED=0`` so that the same class gives the same report.
``--archive DIR`` adds earlier terms' submissions (any folders under DIR that hold
``<student>/<assignment>/*.ipynb``), compared with this term's students, not with each other.

Written: ``reports/similarity-<assignment>.html`` (pairs ranked, each pair's code side by side with
the matching parts marked) and ``reports/similarity-<assignment>.csv``; the top pairs are printed. A
pair's score is the mean of the two shares of each student's fingerprinted code that the other one
also has; a high score is a reason to read both submissions, not a finding.

What is trusted: the release notebooks and the course folder are the instructor's. Submitted
notebooks are not: an unreadable one is named and skipped, and everything a student wrote (code, and
the folder names that are student ids) reaches the page escaped and the terminal without control
characters. The page loads nothing from anywhere (a Content-Security-Policy forbids it), so opening
it runs no script and calls no server. A notebook is only parsed, never run.
"""
from __future__ import annotations

import argparse
import html
import io
import sys
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import nbformat

COURSE = Path(__file__).resolve().parents[1]
NOISE = 25  # shortest match that counts, in filtered characters (copydetect's default)
GUARANTEE = 40  # shortest match always found: winnowing keeps one fingerprint per GUARANTEE - NOISE + 1 k-grams
LANGUAGE = "python"


@dataclass
class Document:
    who: str  # a student id, or "archive: <path>" for an earlier term's submission
    code: str
    archived: bool = False


@dataclass
class Pair:
    a: str
    b: str
    score: float
    share_a: float  # share of a's fingerprinted code found in b
    share_b: float
    tokens: int  # matched filtered characters in a
    code_a: str
    code_b: str
    slices_a: object  # copydetect's [starts, ends] of the matching parts of code_a
    slices_b: object

    def marked(self) -> tuple[str, str]:
        """Both codes as HTML, escaped, with the matching parts in <mark>."""
        from copydetect.utils import highlight_overlap

        return (highlight_overlap(self.code_a, self.slices_a, "<mark>", "</mark>", escape_html=True)[0],
                highlight_overlap(self.code_b, self.slices_b, "<mark>", "</mark>", escape_html=True)[0])


def _grade_id(cell) -> str | None:
    return cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")


def answer_code(submission, release, notebook: str = "") -> str:
    """The student's answer code: the release's solution cells (by grade id) and the code cells they added."""
    stubs = {_grade_id(c): c.source.strip() for c in release.cells
             if c.cell_type == "code" and c.metadata.get("nbgrader", {}).get("solution")}
    solutions = list(stubs)
    answers, own = {}, []
    for cell in submission.cells:
        if cell.get("cell_type") != "code":
            continue
        grade_id = _grade_id(cell)
        if grade_id in stubs:
            if cell.get("source", "").strip() != stubs[grade_id]:  # an untouched stub is no answer
                answers.setdefault(grade_id, cell.get("source", ""))
        elif grade_id is None:
            own.append(cell.get("source", ""))
    prefix = f"{notebook}: " if notebook else ""
    parts = [f"# --- {prefix}{g} ---\n{answers[g]}" for g in solutions if g in answers]
    parts += [f"# --- {prefix}a cell of the student's own ---\n{source}" for source in own]
    return "\n\n".join(parts)


def release_code(course: Path, assignment: str) -> tuple[dict[str, nbformat.NotebookNode], str]:
    """The release's notebooks by file name, and all their code (the boilerplate)."""
    notebooks = {p.name: nbformat.read(p, as_version=4) for p in sorted((course / "notebooks" / assignment).glob("*.ipynb"))
                 if ".before-release-" not in p.name}
    if not notebooks:
        raise SystemExit(f"no release notebooks in notebooks/{assignment}/ (run ./kit release)")
    code = "\n\n".join(c.source for nb in notebooks.values() for c in nb.cells if c.cell_type == "code")
    return notebooks, code


def read_submission(folder: Path, releases: dict) -> str:
    """One submission's answer code across the release's notebooks; raises ValueError if one is unreadable."""
    parts = []
    for name, release in releases.items():
        path = folder / name
        if not path.is_file():
            continue
        try:
            nb = nbformat.read(path, as_version=4)
        except Exception as error:
            raise ValueError(f"{name} is not a readable notebook ({type(error).__name__})") from None
        parts.append(answer_code(nb, release, name if len(releases) > 1 else ""))
    return "\n\n".join(parts)


def load_documents(course: Path, assignment: str, archive: Path | None = None) -> tuple[list[Document], str, list[str]]:
    """This term's (and the archive's) answer code, the boilerplate, and the submissions that could not be read."""
    releases, boilerplate = release_code(course, assignment)
    documents, problems = [], []
    folders = [(p.parent.name, p, False) for p in sorted((course / "submitted").glob(f"*/{assignment}")) if p.is_dir()]
    if archive is not None:
        folders += [(f"archive: {p.parent.relative_to(archive)}", p, True)
                    for p in sorted(Path(archive).rglob(assignment)) if p.is_dir() and any(p.glob("*.ipynb"))]
    for who, folder, archived in folders:
        try:
            documents.append(Document(who, read_submission(folder, releases), archived))
        except ValueError as error:
            problems.append(f"{who}: {error}, not compared")
    return documents, boilerplate, problems


def compare(documents: list[Document], boilerplate: str, noise: int = NOISE, guarantee: int = GUARANTEE) -> list[Pair]:
    """Every pair that shares answer code beyond the boilerplate, most similar first."""
    import numpy as np
    from copydetect import CodeFingerprint, compare_files

    def fingerprint(code, window, boiler=()):
        return CodeFingerprint(f"{LANGUAGE}.py", noise, window, boilerplate=np.asarray(boiler), language=LANGUAGE,
                               fp=io.StringIO(code))

    # Every k-gram of the boilerplate (window 1), as copydetect does, so none survives in a student's code.
    boiler = sorted(fingerprint(boilerplate, 1).hashes) if len(boilerplate) >= noise else []
    window = guarantee - noise + 1
    prints = [fingerprint(d.code, window, boiler) if len(d.code) >= noise else None for d in documents]
    holders: dict[int, list[int]] = {}  # fingerprint -> documents that have it: only pairs sharing one are compared
    for i, p in enumerate(prints):
        for h in p.hashes if p is not None else ():
            holders.setdefault(h, []).append(i)
    candidates = {pair for group in holders.values() for pair in combinations(group, 2)}
    pairs = []
    for i, j in sorted(candidates):
        if documents[i].archived and documents[j].archived:
            continue
        tokens, (share_i, share_j), (slices_i, slices_j) = compare_files(prints[i], prints[j])
        if tokens == 0:
            continue
        pairs.append(Pair(documents[i].who, documents[j].who, float((share_i + share_j) / 2), float(share_i),
                          float(share_j), int(tokens), prints[i].raw_code, prints[j].raw_code, slices_i, slices_j))
    pairs.sort(key=lambda p: (-p.score, -p.tokens, p.a, p.b))
    return pairs


PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<title>{title}</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; }} table {{ border-collapse: collapse; }}
td, th {{ border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: left; }}
.side {{ display: grid; grid-template-columns: 1fr 1fr; gap: 1em; }}
pre {{ background: #f7f7f7; padding: 0.6em; overflow-x: auto; font-size: 0.85em; }} mark {{ background: #ffd27f; }}
</style></head><body>
<h1>{title}</h1>
<p>{summary}</p>
<table><tr><th>#</th><th>student</th><th>student</th><th>score</th><th>share of the first's code</th>
<th>share of the second's</th><th>matched characters</th></tr>
{rows}</table>
{details}
</body></html>
"""


def write_reports(course: Path, assignment: str, pairs: list[Pair], compared: int, problems: list[str],
                  shown: int = 50) -> tuple[Path, Path]:
    """reports/similarity-<assignment>.html (the ``shown`` highest pairs side by side) and .csv (every pair)."""
    import pandas as pd

    out = course / "reports"
    out.mkdir(exist_ok=True)
    esc = html.escape
    rows = "\n".join(f"<tr><td><a href='#pair{n}'>{n}</a></td><td>{esc(p.a)}</td><td>{esc(p.b)}</td>"
                     f"<td>{p.score:.2f}</td><td>{p.share_a:.2f}</td><td>{p.share_b:.2f}</td><td>{p.tokens}</td></tr>"
                     for n, p in enumerate(pairs[:shown], 1))
    details = "\n".join(f"<h2 id='pair{n}'>{n}. {esc(p.a)} and {esc(p.b)}: {p.score:.2f}</h2><div class='side'>"
                        f"<div><h3>{esc(p.a)}</h3><pre>{marked_a}</pre></div>"
                        f"<div><h3>{esc(p.b)}</h3><pre>{marked_b}</pre></div></div>"
                        for n, p in enumerate(pairs[:shown], 1) for marked_a, marked_b in [p.marked()])
    summary = (f"{compared} submissions compared; {len(pairs)} pairs share answer code beyond the release's "
               f"(the first {min(shown, len(pairs))} shown here, all in the CSV). Marked: code both have, after "
               f"renaming every name to one letter and dropping comments and layout. A high score is a reason to "
               f"read both submissions, not a finding.")
    if problems:
        summary += " Not compared: " + "; ".join(esc(p) for p in problems) + "."
    page = out / f"similarity-{assignment}.html"
    page.write_text(PAGE.format(title=esc(f"Similarity of answers: {assignment}"), summary=summary, rows=rows,
                                details=details), encoding="utf-8")
    table = out / f"similarity-{assignment}.csv"
    pd.DataFrame([dict(student_a=p.a, student_b=p.b, score=round(p.score, 4), share_a=round(p.share_a, 4),
                       share_b=round(p.share_b, 4), matched_characters=p.tokens) for p in pairs],
                 columns=["student_a", "student_b", "score", "share_a", "share_b", "matched_characters"]
                 ).to_csv(table, index=False)
    return page, table


def _plain(text: str) -> str:
    """A folder name as the terminal should print it: no control characters."""
    return "".join(ch if ch.isprintable() else "?" for ch in text)


def main(argv: list[str] | None = None, course: Path = COURSE) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.similarity", description=__doc__.split("\n")[0])
    parser.add_argument("assignment")
    parser.add_argument("--archive", type=Path, help="earlier terms' submissions: folders of <student>/<assignment>/")
    parser.add_argument("--top", type=int, default=10, help="pairs to print (default %(default)s)")
    args = parser.parse_args(argv)
    if args.archive is not None and not args.archive.is_dir():
        parser.error(f"--archive {args.archive}: no such folder")
    documents, boilerplate, problems = load_documents(course, args.assignment, args.archive)
    pairs = compare(documents, boilerplate)
    page, table = write_reports(course, args.assignment, pairs, len(documents), problems)
    print(f"{len(documents)} submission(s) of {args.assignment} compared; {len(pairs)} pair(s) share answer code "
          f"beyond the release's.")
    for n, p in enumerate(pairs[:args.top], 1):
        print(f"{n:3}. {p.score:.2f}  {_plain(p.a)}  —  {_plain(p.b)}  ({p.share_a:.0%} / {p.share_b:.0%}, "
              f"{p.tokens} characters)")
    for problem in problems:
        print(f"not compared: {_plain(problem)}")
    print(f"\n{page.relative_to(course)} (side by side), {table.relative_to(course)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
