"""How long ``./kit similarity`` takes for a class of N students of assignment 02 (11 answer cells).

    python benchmarks/similarity.py --students 40 300

A synthetic class in a temporary course folder: 02's release, and per student the reference answers
with every name renamed at random (to 3-6 random letters), comments rewritten, and each answer given
one to three extra lines drawn from a pool, so that most pairs share code and all are compared: the
slow case. One student in ten keeps a cell as released. Timed: reading the notebooks, fingerprinting
and comparing every pair, and writing the HTML and CSV (``helpers.similarity.main``), once per size.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import random
import re
import shutil
import string
import sys
import tempfile
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
ASSIGNMENT = "02_kmeans_gmm_ood"
EXTRA = ["print(X.shape)", "assert torch.isfinite(out).all()", "tmp = out.detach().clone()",
         "if verbose:\n        print('step', it)", "eps = 1e-12", "out = out.float()", "n, d = X.shape"]


def student_notebook(solved, release, rng: random.Random):
    nb = nbformat.from_dict(solved)
    names = sorted({n for c in nb.cells if c.metadata.get("nbgrader", {}).get("solution")
                    for n in re.findall(r"\b([a-z_][a-z0-9_]{2,})\s*=", c.source)})
    renames = {n: "".join(rng.choices(string.ascii_lowercase, k=rng.randint(3, 6))) for n in names}
    stubs = {c.metadata["nbgrader"]["grade_id"]: c.source for c in release.cells if c.metadata.get("nbgrader", {}).get("solution")}
    for c in nb.cells:
        grade_id = c.metadata.get("nbgrader", {}).get("grade_id")
        if grade_id not in stubs or c.cell_type != "code":
            continue
        if rng.random() < 0.1:
            c.source = stubs[grade_id]
            continue
        source = re.sub(r"#.*", lambda _: "# " + " ".join(rng.choices(["note", "why", "ok", "see", "step"], k=3)), c.source)
        for old, new in renames.items():
            source = re.sub(rf"\b{old}\b", new, source)
        lines = source.splitlines()
        for _ in range(rng.randint(1, 3)):
            lines.insert(rng.randint(1, max(1, len(lines) - 1)), "    " + rng.choice(EXTRA))
        c.source = "\n".join(lines)
    return nb


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--students", type=int, nargs="+", default=[40, 300])
    args = parser.parse_args()

    from helpers import course, similarity

    release = nbformat.read(ROOT / "notebooks" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb", as_version=4)
    solved = course._solved_release(ROOT / "solutions" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb",
                                    ROOT / "notebooks" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb")
    for n in args.students:
        folder = Path(tempfile.mkdtemp(prefix="similarity-bench-"))
        try:
            shutil.copytree(ROOT / "notebooks" / ASSIGNMENT, folder / "notebooks" / ASSIGNMENT)
            rng = random.Random(n)
            for i in range(n):
                target = folder / "submitted" / f"student-{i:03d}" / ASSIGNMENT
                target.mkdir(parents=True)
                nbformat.write(student_notebook(solved, release, rng), target / f"{ASSIGNMENT}.ipynb")
            started = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()) as printed:
                similarity.main([ASSIGNMENT], course=folder)
            seconds = time.perf_counter() - started
            pairs = printed.getvalue().split("compared; ")[1].split(" pair")[0]
            print(f"{n:4} students: {seconds:6.1f} s ({n * (n - 1) // 2} pairs, {pairs} sharing code)")
        finally:
            shutil.rmtree(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
