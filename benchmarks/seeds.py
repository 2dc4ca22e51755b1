"""Run every check of an assignment on its reference answers for many seeds; print failures per seed.

    python benchmarks/seeds.py 01 --seeds 20 [--budget grade]

Each test cell of the source notebook (visible and hidden tests) is executed
once per seed, with the global seed set to it and every ``checks.check_*``
call given ``seed=<that seed>`` when the checker takes one. A check that is
correct must pass for every seed.
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import io
import inspect
import os
import sys
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


class _Reseed(ast.NodeTransformer):
    def __init__(self, checks, seed: int):
        self.checks, self.seed = checks, seed

    def visit_Call(self, node: ast.Call):
        self.generic_visit(node)
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr.startswith("check_") and \
                "seed" in inspect.signature(getattr(self.checks, func.attr)).parameters:
            # Offset hidden tests' own seeds too, so each run sees new inputs.
            old = next((k for k in node.keywords if k.arg == "seed"), None)
            base = old.value.value if old is not None and isinstance(old.value, ast.Constant) else 0
            node.keywords = [k for k in node.keywords if k.arg != "seed"]
            node.keywords.append(ast.keyword("seed", ast.Constant(1000 * self.seed + base)))
        return node


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("assignment", help="assignment number, e.g. 01")
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--budget", default="grade", choices=["grade", "full"])
    args = parser.parse_args()
    os.environ["COURSE_BUDGET"] = args.budget

    from conftest import reference_answers, source_notebook

    import helpers

    namespace = vars(reference_answers(args.assignment))
    checks = namespace["checks"]
    tests = [c for c in nbformat.read(source_notebook(args.assignment), as_version=4).cells
             if c.metadata.get("nbgrader", {}).get("grade") and c.cell_type == "code"]
    failures_total = 0
    print("| seed | failed checks | seconds |\n| ---: | --- | ---: |")
    for seed in range(args.seeds):
        failed = []
        start = time.perf_counter()
        for cell in tests:
            tree = ast.fix_missing_locations(_Reseed(checks, seed).visit(ast.parse(cell.source)))
            helpers.seed_everything(seed)
            try:
                with contextlib.redirect_stdout(io.StringIO()):
                    exec(compile(tree, cell.metadata["nbgrader"]["grade_id"], "exec"), namespace)
            except Exception as error:  # report and continue: the point is to see every failure
                failed.append(f"{cell.metadata['nbgrader']['grade_id']} ({str(error).splitlines()[0][:160]})")
        failures_total += len(failed)
        print(f"| {seed} | {'; '.join(failed) or '—'} | {time.perf_counter() - start:.1f} |", flush=True)
    print(f"\n{failures_total} failure(s) over {args.seeds} seeds × {len(tests)} test cells ({args.budget} budget)")
    return 1 if failures_total else 0


if __name__ == "__main__":
    sys.exit(main())
