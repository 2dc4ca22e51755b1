"""Grading a class: time per submission, class wall time and speed-up, per engine and with/without the sandbox.

    .venv/bin/python benchmarks/grading.py --students 8                      # every mode, 8 students
    .venv/bin/python benchmarks/grading.py --students 40 --modes local-2     # a 40-student class, 2 workers

Synthesises a class in a temporary copy of the course: students cycle through
correct (the release with the reference answers), blank (the release),
broken (a syntax error in one answer and an exception in another) and
resubmitted (correct, graded, then handed in again and regraded), for every
assignment. Modes: local-N (a LocalCluster of N workers), local-N-nosandbox,
dask-N (a scheduler and N workers as separate processes, as on a cluster).
Run it with nothing else on the machine.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import nbformat

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from helpers import course, grading  # noqa: E402

KINDS = ("correct", "blank", "broken", "resubmitted")


def synthesise(root: Path, students: int, names: list[str]) -> Path:
    copy = course.course_copy(root / "class", names)
    for name in names:
        for released in (copy / "notebooks" / name).glob("*.ipynb"):
            solved = course._solved_release(copy / "solutions" / name / released.name, released)
            for i in range(students):
                kind = KINDS[i % len(KINDS)]
                nb = nbformat.read(released, as_version=4) if kind == "blank" else nbformat.from_dict(solved)
                if kind == "broken":
                    answers = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("solution") and c.cell_type == "code"]
                    answers[0].source += "\n    return (\n"  # syntax error
                    answers[-1].source += "\nraise RuntimeError('not finished')"
                folder = copy / "submitted" / f"{kind}-{i:03d}" / name
                folder.mkdir(parents=True, exist_ok=True)
                nbformat.write(nb, folder / released.name)
    return copy


def resubmit(copy: Path) -> None:
    for path in (copy / "submitted").glob("resubmitted-*/*/*.ipynb"):
        nb = nbformat.read(path, as_version=4)
        nb.cells.append(nbformat.v4.new_markdown_cell("Second hand-in."))
        nbformat.write(nb, path)
        os.utime(path)


def run(mode: str, students: int, names: list[str]) -> dict:
    workers = int(mode.split("-")[1])
    with tempfile.TemporaryDirectory() as tmp:
        copy = synthesise(Path(tmp), students, names)
        options = grading.Options(workers=workers, sandbox="nosandbox" not in mode)
        started = time.monotonic()
        if mode.startswith("dask"):
            with grading.LocalDaskProcesses(workers, Path(tmp)) as address:
                options.scheduler = address
                _, first = course.grade(copy, options=options)
                wall = time.monotonic() - started
                resubmit(copy)
                _, second = course.grade(copy, options=options)
        else:
            _, first = course.grade(copy, options=options)
            wall = time.monotonic() - started
            resubmit(copy)
            _, second = course.grade(copy, options=options)
    per_assignment = {}
    for name in names:
        seconds = [s for _, a, s, _ in first.timings if a == name]
        per_assignment[name] = (statistics.mean(seconds), max(seconds)) if seconds else (float("nan"), float("nan"))
    return dict(mode=mode, wall=wall, execution_wall=first.wall, per_assignment=per_assignment,
                regraded=len(second.timings), regrade_wall=second.wall, problems=len(first.problems),
                flagged=len(first.flagged))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--students", type=int, default=8)
    parser.add_argument("--assignments", nargs="*", default=course.assignments(), help="default: all")
    parser.add_argument("--modes", nargs="*", default=["local-1", "local-1-nosandbox", "local-2", "dask-2"])
    args = parser.parse_args(argv)
    names = [n for n in course.assignments() if any(n.startswith(a) for a in args.assignments)]
    rows = [run(mode, args.students, names) for mode in args.modes]
    baseline = next((r["wall"] for r in rows if r["mode"] == "local-1"), None)
    short = {n: n[:2] for n in names}
    print(f"\n{args.students} students x {len(names)} assignments ({', '.join(KINDS)}), {os.cpu_count()} cores\n")
    header = ["mode", "class wall s", "speed-up"] + [f"{short[n]} mean/max s" for n in names] + ["regraded", "regrade s", "problems", "flagged"]
    print(" | ".join(header))
    print(" | ".join("---" for _ in header))
    for r in rows:
        speed = f"{baseline / r['wall']:.2f}x" if baseline else "-"
        cells = [r["mode"], f"{r['wall']:.0f}", speed] + [f"{m:.1f} / {x:.1f}" for m, x in r["per_assignment"].values()]
        cells += [str(r["regraded"]), f"{r['regrade_wall']:.0f}", str(r["problems"]), str(r["flagged"])]
        print(" | ".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
