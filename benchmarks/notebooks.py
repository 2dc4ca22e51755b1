"""Wall time of each source notebook per budget, and of nbgrader autograding it.

    python benchmarks/notebooks.py 01 --budget grade full [--autograde] [--record]

Runs the *source* notebooks (reference answers) from a clean kernel with
nbclient in a scratch folder, prints a table of wall times and failing cells,
and echoes the lines of output that report results (``--grep``). ``--record``
writes the times of runs without failures into ``benchmarks/notebook-times.json``
(run it on an idle machine): the one table of times that the READMEs quote
(``helpers.edition.notebook_times`` writes them into the student edition's).
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TIMES = ROOT / "benchmarks" / "notebook-times.json"
sys.path.insert(0, str(ROOT))


def cell_seconds(cell) -> float:
    """Wall time nbclient recorded for one executed cell (0 when it did not run)."""
    from datetime import datetime

    timing = cell.get("metadata", {}).get("execution", {})
    start, end = timing.get("iopub.execute_input"), timing.get("shell.execute_reply")
    if not (start and end):
        return 0.0
    parse = lambda stamp: datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return (parse(end) - parse(start)).total_seconds()


def run_notebook(path: Path, budget: str, seed: int | None = None) -> tuple[float, list[str], list[str]]:
    """Execute a copy of ``path``; return (seconds, failing cell ids, stdout lines).

    The stdout lines end with the five slowest cells, as ``slowest cell <id>: <seconds> s``.
    """
    from helpers.handin import execute  # sets COURSE_HANDIN_RUN, so the last cell does not hand the notebook in

    env_backup = dict(os.environ)
    os.environ["COURSE_BUDGET"] = budget
    if seed is not None:
        os.environ["COURSE_SEED"] = str(seed)
    try:
        start = time.perf_counter()
        nb = execute(path, timeout=1800)
        seconds = time.perf_counter() - start
    finally:
        os.environ.clear()
        os.environ.update(env_backup)
    failures, lines = [], []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if output.output_type == "error":
                failures.append(f"{cell.get('id')}: {output.ename}: {output.evalue[:200]}")
            elif output.output_type == "stream":
                lines += output.text.splitlines()
    code = [c for c in nb.cells if c.cell_type == "code"]
    for cell in sorted(code, key=cell_seconds, reverse=True)[:5]:
        lines.append(f"slowest cell {cell.get('id')}: {cell_seconds(cell):.1f} s")
    return seconds, failures, lines


def time_autograde(assignment: str) -> float:
    """Seconds nbgrader takes to autograde the sample-solution student of ``assignment`` (grade budget)."""
    from helpers import course

    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp)
        shutil.copy(ROOT / "nbgrader_config.py", copy)
        shutil.copytree(ROOT / "solutions", copy / "solutions")
        course.release(copy)
        course.add_sample_class(copy)
        shutil.rmtree(copy / "submitted" / "sample-blank")
        start = time.perf_counter()
        course.nbgrader("autograde", assignment, "--student", "sample-solution", "--force", course=copy)
        return time.perf_counter() - start


def record(rows: list[tuple[str, str, float, int]], table: Path = TIMES) -> None:
    """Merge the clean nbclient runs of ``rows`` into ``table`` ({budget: {assignment: seconds}})."""
    import json

    times = json.loads(table.read_text()) if table.exists() else {}
    for name, run, seconds, failed in rows:
        if run.startswith("nbclient, ") and not failed:
            times.setdefault(run.removeprefix("nbclient, "), {})[name[:2]] = round(seconds)
    table.write_text(json.dumps(times, indent=2, sort_keys=True) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("assignments", nargs="+", help="assignment numbers, e.g. 01 02")
    parser.add_argument("--budget", nargs="+", default=["grade"], choices=["grade", "full"])
    parser.add_argument("--autograde", action="store_true", help="also time nbgrader autograde (grade budget)")
    parser.add_argument("--record", action="store_true", help=f"write the times into {TIMES.relative_to(ROOT)}")
    parser.add_argument("--grep", default=r"(✔|test MSE|accuracy|AUROC|weights|spread|result|slowest cell)",
                        help="regex of output lines to echo")
    args = parser.parse_args()
    rows = []
    for number in args.assignments:
        (path,) = (ROOT / "solutions").glob(f"{number}_*/*.ipynb")
        for budget in args.budget:
            seconds, failures, lines = run_notebook(path, budget)
            rows.append((path.parent.name, f"nbclient, {budget}", seconds, len(failures)))
            print(f"\n## {path.parent.name} — {budget}: {seconds:.1f} s, {len(failures)} failing cell(s)")
            for line in failures + [l for l in lines if re.search(args.grep, l)]:
                print("  " + line)
        if args.autograde:
            rows.append((path.parent.name, "nbgrader autograde, grade", time_autograde(path.parent.name), 0))
    print("\n| assignment | run | wall time (s) | failing cells |\n| --- | --- | ---: | ---: |")
    for name, run, seconds, failed in rows:
        print(f"| {name} | {run} | {seconds:.1f} | {failed} |")
    if args.record:
        record(rows)
    return 0 if all(r[3] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
