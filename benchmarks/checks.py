"""Time of each test cell's checks on the reference answers: in the student's kernel, and judged as grading runs them.

    .venv/bin/python benchmarks/checks.py 02            # one assignment
    .venv/bin/python benchmarks/checks.py 01 02 03 04

``local`` is the student's self-check in JupyterLab: the checks and the
answers in one process. ``judged`` is grading: the checks run here
(:func:`helpers.judge.judge_cell`) and call the answers in a separate
process (a stand-in for the sandboxed kernel, without the sandbox), which
returns plain data. Both use one torch thread, as grading does. Also printed:
how long importing the checker module takes, which every notebook's setup
cell pays. Run it with nothing else on the machine.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

AGENT = """
import sys
sys.path[:0] = {paths!r}
from conftest import reference_answers
from helpers.bridge import serve
namespace = vars(reference_answers({assignment!r}))
print("ready", flush=True)
for line in sys.stdin:
    serve(line.strip(), namespace)
"""


def test_cells(assignment: str):
    from conftest import source_notebook

    nb = nbformat.read(source_notebook(assignment), as_version=4)
    return [(c.metadata["nbgrader"]["grade_id"], c.source) for c in nb.cells if c.cell_type == "code"
            and c.metadata.get("nbgrader", {}).get("grade") and not c.metadata["nbgrader"].get("solution")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("assignments", nargs="+")
    args = parser.parse_args()
    os.environ.setdefault("COURSE_BUDGET", "grade")
    os.environ["COURSE_DEVICE"] = "cpu"
    import torch

    torch.set_num_threads(1)
    from conftest import reference_answers

    from helpers import bridge, judge

    for assignment in args.assignments:
        timing = (f"import time; t = time.perf_counter(); import helpers.checks.a{assignment}; "
                  "print(f'{time.perf_counter() - t:.2f}')")
        seconds = subprocess.run([sys.executable, "-c", timing], capture_output=True, text=True, cwd=ROOT,
                                 env={**os.environ, "OMP_NUM_THREADS": "1"}).stdout.strip()
        print(f"\n{assignment}: importing helpers.checks.a{assignment} takes {seconds} s in a fresh process (torch included)")
        checks = __import__(f"helpers.checks.a{assignment}", fromlist=["_"])
        answers = reference_answers(assignment)
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        agent = subprocess.Popen([sys.executable, "-c", AGENT.format(paths=sys.path[:2], assignment=assignment)],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        agent.stdout.readline()
        rows, folder = [], tempfile.mkdtemp()
        for grade_id, source in test_cells(assignment):
            namespace = {**vars(answers), "checks": checks}
            started = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):
                exec(source, namespace)
            local = time.perf_counter() - started
            listener = bridge.Listener(folder)
            agent.stdin.write(listener.path + "\n")
            agent.stdin.flush()
            started = time.perf_counter()
            verdict = judge.judge_cell(source, listener, f"helpers.checks.a{assignment}", time.monotonic() + 600)
            judged = time.perf_counter() - started
            rows.append((grade_id, local, judged, verdict.kind))
        agent.stdin.close()
        agent.wait()
        print(f"{'test cell':<32} {'local s':>8} {'judged s':>9}  verdict")
        for grade_id, local, judged, kind in rows:
            print(f"{grade_id:<32} {local:8.2f} {judged:9.2f}  {kind}")
        print(f"{'total':<32} {sum(r[1] for r in rows):8.2f} {sum(r[2] for r in rows):9.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
