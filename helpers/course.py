"""The instructor's side: release the assignments and grade a class with nbgrader.

    python -m helpers.course release          # solutions/ -> notebooks/ (student versions)
    python -m helpers.course check-release    # exit 1 if notebooks/ is stale
    python -m helpers.course grade            # autograde submitted/, feedback, grades.csv, report
    python -m helpers.course class            # all of it, with a sample class of two students

The course directory is the repository root (``nbgrader_config.py``). The
sample class adds two students to ``submitted/``: ``sample-solution`` (the
release with the reference answers filled in, which must earn every
autograded point) and ``sample-blank`` (the untouched release, which must
earn none). Their folders are rewritten on every run; nothing else in
``submitted/`` is ever modified.
"""
from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat

from .gradebook import open_gradebook

COURSE = Path(__file__).resolve().parents[1]
SAMPLE_STUDENTS = ("sample-solution", "sample-blank")


def assignments(course: Path = COURSE) -> list[str]:
    return sorted(p.name for p in (course / "solutions").iterdir() if p.is_dir() and any(p.glob("*.ipynb")))


def nbgrader(*args: str, course: Path = COURSE, budget: str = "grade", check: bool = True,
             capture: bool = False) -> subprocess.CompletedProcess:
    """Run an nbgrader command in ``course``, with this environment's tools on PATH.

    nbgrader calls ``alembic`` and the Jupyter kernel through PATH, and the
    kernel inherits this environment: ``COURSE_BUDGET`` selects the budget.
    """
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
               COURSE_BUDGET=budget, PYTHONWARNINGS="ignore")
    return subprocess.run([sys.executable, "-m", "nbgrader", *args, "--log-level=WARN"], cwd=course, env=env,
                          check=check, text=True, capture_output=capture)


def _worked_on(path: Path) -> bool:
    """Does this release notebook carry a student's run (outputs or execution counts)?"""
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception:
        return True  # unreadable: keep it rather than guess
    return any(cell.get("outputs") or cell.get("execution_count") for cell in nb.cells if cell.cell_type == "code")


BUILD_DIR = ".release-build"  # nbgrader writes here first; kept out of git


def _generate(course: Path) -> Path:
    """Generate every assignment with nbgrader into ``course/.release-build``; return that folder.

    Generating in the course directory itself also records the assignments'
    grade cells in the gradebook, which autograding needs.
    """
    from .grading import nbgrader_api

    build = course / BUILD_DIR
    shutil.rmtree(build, ignore_errors=True)
    api = nbgrader_api(course, CourseDirectory={"release_directory": BUILD_DIR})  # in process: 4 s less per assignment
    for name in assignments(course):
        result = api.generate_assignment(name)
        if not result["success"]:
            raise RuntimeError(f"nbgrader could not generate {name}:\n{result.get('log', '')}{result.get('error', '')}")
    return build


def _release_notebooks(folder: Path) -> set[Path]:
    return {p.relative_to(folder) for p in folder.rglob("*.ipynb")
            if ".before-release-" not in p.name and ".ipynb_checkpoints" not in p.parts}


def release(course: Path = COURSE) -> list[Path]:
    """Generate the student versions into ``notebooks/``; return the files that changed.

    A release notebook that someone has run (it holds outputs) is copied aside
    with a time stamp before it is replaced, so no student work is lost.
    """
    build = _generate(course)
    changed = []
    for relative in sorted(_release_notebooks(build)):
        new, target = build / relative, course / "notebooks" / relative
        if target.exists() and filecmp.cmp(new, target, shallow=False):
            continue
        if target.exists() and _worked_on(target):
            keep = target.with_name(f"{target.stem}.before-release-{time.strftime('%Y%m%d-%H%M%S')}.ipynb")
            shutil.copy2(target, keep)
            print(f"kept the edited notebook as {keep.relative_to(course)}")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(new, target)
        changed.append(target)
    shutil.rmtree(build)
    return changed


def stale_release(course: Path = COURSE) -> list[str]:
    """Differences between ``notebooks/`` and a fresh generation from ``solutions/`` (empty: in sync)."""
    build = _generate(course)
    try:
        fresh, committed = _release_notebooks(build), _release_notebooks(course / "notebooks")
        problems = [f"missing from notebooks/: {p}" for p in sorted(fresh - committed)]
        problems += [f"not generated from solutions/: {p}" for p in sorted(committed - fresh)]
        problems += [f"out of date: notebooks/{p}" for p in sorted(fresh & committed)
                     if not filecmp.cmp(build / p, course / "notebooks" / p, shallow=False)]
        return problems
    finally:
        shutil.rmtree(build, ignore_errors=True)


def _solved_release(source: Path, released: Path):
    """The release notebook with every answer cell filled from the source: a perfect submission."""
    answers = {c.metadata["nbgrader"]["grade_id"]: c.source for c in nbformat.read(source, as_version=4).cells
               if c.metadata.get("nbgrader", {}).get("solution")}
    nb = nbformat.read(released, as_version=4)
    for cell in nb.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if grade_id in answers:
            cell.source = answers[grade_id]
    return nb


def course_copy(target: Path, names: list[str], course: Path = COURSE) -> Path:
    """A new course directory at ``target`` with these assignments, released (for tests and benchmarks)."""
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy(course / "nbgrader_config.py", target)
    for name in names:
        shutil.copytree(course / "solutions" / name, target / "solutions" / name)
    release(target)
    return target


def add_sample_class(course: Path = COURSE) -> None:
    """(Re)write the sample students' submissions: the solved release and the untouched release."""
    for name in assignments(course):
        for student in SAMPLE_STUDENTS:
            target = course / "submitted" / student / name
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir(parents=True)
        for released in (course / "notebooks" / name).glob("*.ipynb"):
            if ".before-release-" in released.name:
                continue
            shutil.copy(released, course / "submitted" / "sample-blank" / name / released.name)
            solved = _solved_release(course / "solutions" / name / released.name, released)
            nbformat.write(solved, course / "submitted" / "sample-solution" / name / released.name)


def submitted_students(course: Path = COURSE) -> list[str]:
    folder = course / "submitted"
    return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []


def _unreadable(folder: Path) -> str | None:
    """Why a submission folder cannot be graded at all (no notebook, broken JSON), or None."""
    notebooks = sorted(folder.glob("*.ipynb"))
    if not notebooks:
        return "no .ipynb in the submission folder"
    for path in notebooks:
        try:
            nbformat.validate(nbformat.read(path, as_version=4))
        except Exception as error:
            return f"{path.name} is not a readable notebook ({type(error).__name__}: {str(error).splitlines()[0][:120]})"
    return None


def _needs_grading(course: Path, student: str, name: str, regrade: bool) -> bool:
    graded = course / "autograded" / student / name
    if regrade or student in SAMPLE_STUDENTS or not graded.is_dir():
        return True
    newest = max((p.stat().st_mtime for p in (course / "submitted" / student / name).glob("*.ipynb")), default=0)
    return newest > min((p.stat().st_mtime for p in graded.glob("*.ipynb")), default=0)  # resubmitted since


def _register_student(course: Path, student: str) -> None:
    """Put a student in the gradebook so that the export gives them a row even with nothing gradable."""
    with open_gradebook(course) as gradebook:
        gradebook.update_or_create_student(student)


def grade(course: Path = COURSE, regrade: bool = False, timeout: int | None = None, options=None):
    """Autograde every submission, write feedback and ``grades.csv``.

    Returns the CSV's path and the grading outcome (:class:`helpers.grading.Outcome`):
    its ``problems`` are one line per submission that could not be graded
    normally, its ``flagged`` the submissions that touched the grading
    machinery. Each submission runs in a sandbox (:mod:`helpers.grading`), in
    parallel, and one bad submission never stops the others; its log is kept
    in ``reports/logs/``. Already-graded submissions are kept unless
    ``regrade`` or resubmitted since; the sample students are always regraded.
    ``timeout`` overrides the per-cell limit of ``nbgrader_config.py``.
    """
    from . import grading
    from .regrade import stale

    options = options or grading.Options()
    options.regrade = options.regrade or regrade
    options.timeout = timeout or options.timeout
    shutil.rmtree(_generate(course))  # the gradebook must know the current source notebooks
    problems, pending = [], []

    def log_dir(name: str) -> Path:
        folder = course / "reports" / "logs" / name
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    for name in assignments(course):
        log_dir(name)
        for student in submitted_students(course):
            folder = course / "submitted" / student / name
            if not folder.is_dir():
                continue
            _register_student(course, student)
            reason = _unreadable(folder)
            if reason:
                problems.append(f"{student} / {name}: not graded, scored 0 — {reason}")
            elif _needs_grading(course, student, name, options.regrade) or (
                    options.regrade_changed and stale(course, student, name)):
                pending.append((student, name))
    if pending:
        from .quality import load_classifier

        # The notebooks' sample-quality figures need the cached classifier, and a sandboxed kernel cannot write
        # the data folder: without the cache every 03 and 04 submission would train its own (1–3 minutes).
        load_classifier()
    outcome = grading.grade_submissions(course, pending, options, log_dir)
    outcome.problems[:0] = problems
    if not options.sandbox:
        outcome.problems.insert(0, "graded WITHOUT a sandbox (--no-sandbox): submissions could read and change files")
    # Graded submissions got their feedback as they were recorded; the others' is rewritten here, so that
    # marks given since in the formgrader reach it.
    writer = grading.nbgrader_api(course)
    for name in assignments(course):
        for student in sorted(p.parent.name for p in (course / "autograded").glob(f"*/{name}")):
            if (student, name) not in pending:
                grading.write_feedback(course, writer, student, name, outcome, log_dir)
    grading.export_csv(course, course / "grades.csv")
    return course / "grades.csv", outcome


def score_table(csv: Path):
    """Scores per student (rows) and assignment (columns), as 'score / max'."""
    import pandas as pd

    grades = pd.read_csv(csv)
    grades["cell"] = grades["score"].round(1).astype(str) + " / " + grades["max_score"].round(1).astype(str)
    return grades.pivot(index="student_id", columns="assignment", values="cell")


def needs_a_look(outcome) -> list[str]:
    """The report's list: submissions not graded normally, then those that touched the grading machinery."""
    return outcome.problems + [f"{who}: touches the grading machinery — " + "; ".join(reasons)
                               for who, reasons in outcome.flagged.items()]


def main(argv: list[str] | None = None) -> int:
    from .grading import DEFAULT_MEMORY, DEFAULT_NOTEBOOK_TIMEOUT, Options
    from .sandbox import SandboxUnavailable

    parser = argparse.ArgumentParser(prog="python -m helpers.course", description=__doc__.split("\n")[0])
    parser.add_argument("action", choices=["release", "check-release", "grade", "class"])
    parser.add_argument("--regrade", action="store_true", help="grade again submissions that were graded before")
    parser.add_argument("--regrade-changed", action="store_true",
                        help="grade again the submissions graded by an older version of the tests or checkers; "
                             "writes reports/regrade-<date>.md and .csv (helpers/regrade.py)")
    parser.add_argument("--timeout", type=int, help="per-cell time limit in seconds (default: nbgrader_config.py)")
    parser.add_argument("--workers", type=int, help="submissions graded at once on this machine (default: one per core)")
    parser.add_argument("--scheduler", help="grade on a Dask cluster: the scheduler's address, e.g. tcp://host:8786")
    parser.add_argument("--no-sandbox", action="store_true",
                        help="run submissions without isolation (only for code you trust; the report says so)")
    parser.add_argument("--memory", type=float, default=DEFAULT_MEMORY / 2**30,
                        help="memory limit per submission in GiB (default %(default)g)")
    parser.add_argument("--notebook-timeout", type=int, default=DEFAULT_NOTEBOOK_TIMEOUT,
                        help="wall-clock limit per notebook in seconds (default %(default)s)")
    args = parser.parse_args(argv)
    if args.action == "check-release":
        problems = stale_release()
        print("\n".join(problems) or "notebooks/ is in sync with solutions/")
        return 1 if problems else 0
    if args.action in ("release", "class"):
        changed = release()
        print(f"release: {len(changed)} notebook(s) updated in notebooks/" if changed else "release: notebooks/ already up to date")
    if args.action == "release":
        return 0
    from .data import main as data_main

    if data_main(["fetch"]) != 0:
        return 1
    if args.action == "class":
        add_sample_class()
    options = Options(regrade=args.regrade, timeout=args.timeout, workers=args.workers, scheduler=args.scheduler,
                      sandbox=not args.no_sandbox, memory_limit=int(args.memory * 2**30),
                      notebook_timeout=args.notebook_timeout)
    where = f"on the Dask cluster at {args.scheduler}" if args.scheduler else \
        f"with {options.workers or os.cpu_count()} worker(s) on this machine"
    if options.sandbox and not args.scheduler:
        from .sandbox import bubblewrap

        found = bubblewrap()
        sandboxed = f"each in a sandbox ({found})" if found else "each in a sandbox"
    else:
        sandboxed = "each in a sandbox (the workers' bwrap)" if options.sandbox else "WITHOUT a sandbox"
    print(f"grading {len(submitted_students())} student(s) {where}, {sandboxed}: {', '.join(submitted_students())}")
    try:
        if args.regrade_changed:
            from .regrade import regrade_changed

            csv, outcome, regraded = regrade_changed(COURSE, options=options)
            print(f"regrade: {regraded.relative_to(COURSE)} and .csv" if regraded else
                  "regrade: every graded submission was graded by the current tests and checkers")
        else:
            csv, outcome = grade(options=options)
    except SandboxUnavailable as error:
        print(f"\nNot graded: {error}", file=sys.stderr)
        return 1
    from .report import question_table, question_scores, write_report

    problems = needs_a_look(outcome)
    report = write_report(COURSE, csv, problems)
    print("\nScores per student and assignment (grades.csv; written answers await manual grading):\n")
    print(score_table(csv).to_string())
    print("\nPer question (reports/questions.csv):\n")
    print(question_table(question_scores(COURSE)).to_string())
    if outcome.timings:
        seconds = [t[2] for t in outcome.timings]
        print(f"\n{len(seconds)} notebook(s) run in {outcome.wall:.0f} s: {sum(seconds) / len(seconds):.1f} s each on "
              f"average, {max(seconds):.1f} s at most.")
    print(f"\nFeedback in feedback/, report in {report.relative_to(COURSE)} with reports/scores.png.")
    if problems:
        print("\nSubmissions that need a look:\n  " + "\n  ".join(problems))
    return 0


if __name__ == "__main__":
    sys.exit(main())
