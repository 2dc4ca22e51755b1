"""Autograde a class: trusted steps here, untrusted execution in sandboxes, in parallel, on Dask.

For each submission:

1. **Sanitise** (trusted, this process): nbgrader's autograde with only its
   sanitising preprocessors (clear outputs, restore test cells from the
   gradebook, put back deleted ones) writes ``.grading/sanitized/``.
2. **Execute** (untrusted): :func:`helpers.execution.run_job` runs the
   sanitised notebook with the kernel in a sandbox, on a Dask cluster: a
   ``LocalCluster`` of ``workers`` processes on this machine, or the cluster at
   ``scheduler``. The job carries only the notebook and the limits; the result
   is only the executed notebook and what the driver saw.
3. **Record** (trusted, this process): the executed notebook is read by
   :mod:`helpers.integrity`, written to ``.grading/executed/``, and nbgrader's
   autograde without its ``Execute`` preprocessor records the scores from it
   into the gradebook and ``autograded/``. Submissions that touched the
   grading machinery are listed with the reasons and their scores are marked
   (``needs_manual_grade``); where a canary check passed a wrong answer, no
   check of that notebook could fail, so its autograded scores are set to 0.
   Its feedback (HTML) is written as soon as it is recorded, while other
   submissions still run.
"""
from __future__ import annotations

import os
import secrets
import shutil
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from . import integrity
from .execution import LIMIT_ENAME, Job, Result, run_job
from .feedback import is_test_cell

STAGE = ".grading"  # sanitised and executed notebooks, rewritten on every run; ignored by git
DEFAULT_MEMORY = 4 << 30
DEFAULT_NOTEBOOK_TIMEOUT = 1200


@dataclass
class Options:
    regrade: bool = False
    timeout: int | None = None  # per cell; None: nbgrader_config.py's Execute.timeout
    workers: int | None = None  # local worker processes; None: the number of cores
    scheduler: str | None = None  # a Dask scheduler address, e.g. tcp://host:8786
    sandbox: bool = True
    memory_limit: int = DEFAULT_MEMORY
    notebook_timeout: int = DEFAULT_NOTEBOOK_TIMEOUT


@dataclass
class Outcome:
    problems: list[str] = field(default_factory=list)
    flagged: dict[str, list[str]] = field(default_factory=dict)  # "student / assignment" -> reasons
    timings: list[tuple[str, str, float, str]] = field(default_factory=list)  # student, assignment, seconds, host
    wall: float = 0.0


def _config(course: Path, **sections):
    """The course's nbgrader configuration with the given sections' traits overridden."""
    from traitlets.config import Config
    from traitlets.config.loader import PyFileConfigLoader

    config = PyFileConfigLoader("nbgrader_config.py", path=str(course)).load_config()
    config.CourseDirectory.root = str(course)
    config.merge(Config(sections))
    return config


class _QuietAPI:
    """nbgrader's API, without the SQLAlchemy warnings its own session handling raises (harmless, noisy)."""

    def __init__(self, config):
        from nbgrader.apps import NbGraderAPI
        from nbgrader.coursedir import CourseDirectory

        self.api = NbGraderAPI(coursedir=CourseDirectory(config=config), config=config)

    def _quietly(self, method, *args, **kwargs):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return getattr(self.api, method)(*args, **kwargs)

    def autograde(self, assignment, student):
        return self._quietly("autograde", assignment, student, force=True, create=True)

    def generate_assignment(self, assignment):
        return self._quietly("generate_assignment", assignment, force=True, create=True)

    def generate_feedback(self, assignment, student):
        return self._quietly("generate_feedback", assignment, student, force=True)


def nbgrader_api(course: Path, **sections) -> _QuietAPI:
    """nbgrader's API in this process, on the course's configuration with ``sections`` overridden."""
    # nbgrader runs `alembic` through PATH when it creates a gradebook: this environment's, as `course.nbgrader` does.
    tools = str(Path(sys.executable).parent)
    if tools not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = tools + os.pathsep + os.environ.get("PATH", "")
    return _QuietAPI(_config(course, **sections))


def _sanitiser(course: Path):
    from nbgrader.preprocessors import CheckCellMetadata, ClearOutput, DeduplicateIds, OverwriteCells, OverwriteKernelspec

    return nbgrader_api(course, CourseDirectory={"autograded_directory": f"{STAGE}/sanitized"}, Autograde={
        "sanitize_preprocessors": [ClearOutput, DeduplicateIds, OverwriteKernelspec, OverwriteCells, CheckCellMetadata],
        "autograde_preprocessors": []})


def _recorder(course: Path):
    from nbconvert.preprocessors import ClearMetadataPreprocessor
    from nbgrader.preprocessors import (AssignLatePenalties, CheckCellMetadata, IgnorePattern, LimitOutput,
                                        OverwriteCells, SaveAutoGrades)

    # OverwriteCells again: the executed notebook came back from a worker; its test cells are the gradebook's.
    return nbgrader_api(course, CourseDirectory={"submitted_directory": f"{STAGE}/executed"}, Autograde={
        "sanitize_preprocessors": [OverwriteCells, CheckCellMetadata],
        "autograde_preprocessors": [IgnorePattern, ClearMetadataPreprocessor, LimitOutput, SaveAutoGrades,
                                    AssignLatePenalties, CheckCellMetadata]})


def export_csv(course: Path, target: Path) -> None:
    """``nbgrader export --to target``, in this process."""
    from nbgrader.api import Gradebook
    from nbgrader.plugins import CsvExportPlugin

    plugin = CsvExportPlugin(config=_config(course))
    plugin.to = str(target)
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gradebook:
        plugin.export(gradebook)


def _checks_import(release) -> str:
    """The setup cell's import of the assignment's checker module, e.g. 'from helpers.checks import a01 as checks'."""
    for cell in release.cells:
        for line in cell.source.splitlines() if cell.cell_type == "code" else ():
            if line.startswith("from helpers.checks import") and line.rstrip().endswith(" as checks"):
                return line.strip()
    return ""


def prelude(release) -> str:
    """Trusted code run, unrecorded, before each test cell: undo the simplest ways to disarm the checks."""
    return "\n".join(filter(None, [
        "for _name in ('showtraceback', '_showtraceback', 'showsyntaxerror', 'run_cell', 'run_ast_nodes', 'run_code'):",
        "    get_ipython().__dict__.pop(_name, None)  # an instance attribute would shadow IPython's own method",
        _checks_import(release),  # the test cells call `checks.…`: bind it to the real module again
        "del _name",
    ]))


def canaries(release, count: int = 2) -> list[str]:
    """Checks of deliberately wrong answers, made like the test cells: each must fail in an honest kernel.

    A random test cell's first checker call, with every argument that names
    the student's code replaced by a function that is not implemented.
    """
    import ast

    calls = []
    for cell in release.cells:
        if not is_test_cell(cell):
            continue
        for node in ast.walk(ast.parse(cell.source)):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr.startswith("check_")
                    and any(isinstance(a, ast.Name) for a in node.args)):
                calls.append(node)
                break
    chosen = [calls[secrets.randbelow(len(calls))] for _ in range(count)] if calls else []
    sources = []
    for call in chosen:
        stub = f"_unimplemented_{secrets.token_hex(4)}"
        wrong = ast.Call(func=call.func, args=[ast.Name(stub) if isinstance(a, ast.Name) else a for a in call.args],
                         keywords=call.keywords)
        sources.append(f"def {stub}(*args, **kwargs):\n    raise NotImplementedError()\n\n{ast.unparse(wrong)}")
    return sources


class _Executor:
    """One code path for both: a LocalCluster of single-threaded worker processes, or a remote scheduler."""

    def __init__(self, options: Options):
        from distributed import Client, LocalCluster

        if options.scheduler:
            self.cluster = None
            self.client = Client(options.scheduler, timeout="30s")
        else:
            workers = options.workers or os.cpu_count() or 1
            # memory_limit=0: the kernels' own limit applies; a worker nanny must not kill a grading run.
            self.cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, memory_limit=0,
                                        dashboard_address=":0", silence_logs=40)
            self.client = Client(self.cluster)

    def sandbox_problem(self) -> str | None:
        """Why some worker cannot make a sandbox (None when all can)."""
        from .sandbox import unavailable_reason

        reasons = {r for r in self.client.run(unavailable_reason).values() if r}
        return next(iter(reasons), None)

    def submit(self, job: Job):
        return self.client.submit(run_job, job, key=f"grade-{job.key}-{secrets.token_hex(4)}", pure=False)

    def close(self):
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


def _strip_ansi(text: str) -> str:
    import re

    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def _review(result: Result) -> tuple[nbformat.NotebookNode, list[str], bool]:
    """The executed notebook with unconfirmed passes failed; the runtime evidence; whether checks could not fail."""
    nb = nbformat.reads(result.notebook, as_version=4)
    reasons = list(result.events)
    for index in integrity.unconfirmed_passes(nb):
        nb.cells[index].outputs.append(nbformat.v4.new_output(
            "error", ename=LIMIT_ENAME, evalue="no check reported a pass (no ✔ line): scored as failed",
            traceback=[f"{LIMIT_ENAME}: no check reported a pass (no ✔ line): scored as failed"]))
        reasons.append(f"cell {index}: the test cell ran without an error but no check reported a pass")
    reasons += [f"cell {i}: a checker refused a result as tampering" for i in integrity.tampering_reports(nb)]
    disarmed = not all(result.canaries_failed_as_they_must)
    if disarmed:
        reasons.append("a check of a deliberately wrong answer passed: checks could not fail in this kernel")
    return nb, reasons, disarmed


def _mark(course: Path, assignment: str, student: str, zero: bool) -> None:
    """Mark a flagged submission's autograded scores for manual review (and zero them when checks could not fail)."""
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gradebook:
        submission = gradebook.find_submission(assignment, student)
        for notebook in submission.notebooks:
            for grade in notebook.grades:
                if grade.auto_score is not None and grade.cell.cell_type == "code":
                    grade.needs_manual_grade = True
                    if zero:
                        grade.auto_score = 0
        gradebook.db.commit()


def grade_submissions(course: Path, pending: list[tuple[str, str]], options: Options, log_dir) -> Outcome:
    """Sanitise, execute and record each (student, assignment) in ``pending``."""
    from .sandbox import unavailable_reason

    if options.sandbox and not options.scheduler and unavailable_reason():
        from .sandbox import SandboxUnavailable

        raise SandboxUnavailable(f"cannot grade in a sandbox: {unavailable_reason()}")
    outcome = Outcome()
    started = time.monotonic()
    stage = course / STAGE
    shutil.rmtree(stage, ignore_errors=True)
    if not pending:
        return outcome
    config = _config(course)
    cell_timeout = options.timeout or int(config.Execute.get("timeout", 180))
    executor = _Executor(options)
    try:
        if options.sandbox and options.scheduler and executor.sandbox_problem():
            from .sandbox import SandboxUnavailable

            raise SandboxUnavailable(f"a Dask worker cannot grade in a sandbox: {executor.sandbox_problem()}")
        sanitiser, recorder, feedback = _sanitiser(course), _recorder(course), nbgrader_api(course)
        futures, expected, static = {}, defaultdict(int), {}
        for student, assignment in pending:
            result = sanitiser.autograde(assignment, student)
            log = log_dir(assignment) / f"{student}.log"
            log.write_text(_strip_ansi(result.get("log", "") + result.get("error", "")))
            if not result["success"]:
                outcome.problems.append(f"{student} / {assignment}: could not be prepared for grading, scored 0 — "
                                        f"see {log.relative_to(course)}")
                continue
            for path in sorted((stage / "sanitized" / student / assignment).glob("*.ipynb")):
                release = nbformat.read(course / "notebooks" / assignment / path.name, as_version=4)
                sanitised = nbformat.read(path, as_version=4)
                static[student, assignment] = integrity.suspicious_code(sanitised, release)
                job = Job(key=f"{student}/{assignment}/{path.name}", notebook=nbformat.writes(sanitised),
                          cell_timeout=cell_timeout, notebook_timeout=options.notebook_timeout,
                          memory_limit=options.memory_limit, sandbox=options.sandbox, prelude=prelude(release),
                          canaries=canaries(release))
                futures[executor.submit(job)] = (student, assignment, path.name)
                expected[student, assignment] += 1
        from distributed import as_completed

        runtime = defaultdict(list)
        disarmed = defaultdict(bool)
        for future in as_completed(list(futures)):
            student, assignment, name = futures[future]
            folder = stage / "executed" / student / assignment
            folder.mkdir(parents=True, exist_ok=True)
            try:
                result = future.result()
            except Exception as error:  # the job itself broke (worker lost, kernel never started): 0, and said so
                outcome.problems.append(f"{student} / {assignment}: {name} could not be run ({type(error).__name__}: "
                                        f"{str(error)[:200]}), scored 0")
            else:
                nb, reasons, checks_disarmed = _review(result)
                nbformat.write(nb, folder / name)
                runtime[student, assignment] += reasons
                disarmed[student, assignment] |= checks_disarmed
                outcome.timings.append((student, assignment, result.seconds, result.host))
            expected[student, assignment] -= 1
            if expected[student, assignment] == 0:
                if _record(course, recorder, student, assignment, outcome, log_dir,
                           static.get((student, assignment), []), runtime[student, assignment],
                           disarmed[student, assignment]):
                    write_feedback(course, feedback, student, assignment, outcome, log_dir)
    finally:
        executor.close()
    outcome.wall = time.monotonic() - started
    return outcome


def write_feedback(course, writer, student, assignment, outcome, log_dir) -> None:
    result = writer.generate_feedback(assignment, student)
    if not result["success"]:
        log = log_dir(assignment) / f"{student}.log"
        with log.open("a") as handle:
            handle.write("\n[feedback] " + _strip_ansi(result.get("log", "") + result.get("error", "")))
        outcome.problems.append(f"{student} / {assignment}: feedback could not be written — see {log.relative_to(course)}")


def _record(course, recorder, student, assignment, outcome, log_dir, static, runtime, disarmed) -> bool:
    """Record the scores of one executed submission; whether they were recorded."""
    folder = course / STAGE / "executed" / student / assignment
    if not any(folder.glob("*.ipynb")):
        return False
    timestamp = course / "submitted" / student / assignment / "timestamp.txt"
    if timestamp.exists():
        shutil.copy(timestamp, folder / "timestamp.txt")
    result = recorder.autograde(assignment, student)
    log = log_dir(assignment) / f"{student}.log"
    with log.open("a") as handle:
        handle.write(_strip_ansi(result.get("log", "") + result.get("error", "")))
        handle.write("".join(f"\n[grader] {r}" for r in static + runtime))
    if not result["success"]:
        outcome.problems.append(f"{student} / {assignment}: scores could not be recorded, scored 0 — "
                                f"see {log.relative_to(course)}")
        return False
    timeouts = [r for r in runtime if "time limit" in r or "memory limit" in r or "kernel died" in r]
    outcome.problems += [f"{student} / {assignment}: {r}" for r in timeouts]
    from .course import _timeouts

    outcome.problems += [f"{student} / {assignment}: {note}" for note in _timeouts(course / "autograded" / student / assignment)]
    reasons = static + [r for r in runtime if r not in timeouts]
    if reasons:
        outcome.flagged[f"{student} / {assignment}"] = reasons + (
            ["autograded scores set to 0 and marked for manual grading"] if disarmed
            else ["autograded scores marked for manual grading"])
        _mark(course, assignment, student, zero=disarmed)
    return True


class LocalDaskProcesses:
    """``dask scheduler`` and ``dask worker`` started as separate processes on 127.0.0.1, as on a cluster.

    For a quick try of ``--scheduler`` on one machine, and for the tests and
    the grading benchmark: ``with LocalDaskProcesses(2, folder) as address: …``.
    """

    def __init__(self, workers: int, folder: Path):
        self.workers, self.folder, self.processes = workers, Path(folder), []

    def __enter__(self) -> str:
        import json
        import subprocess
        import sys

        from distributed import Client

        address_file = self.folder / "scheduler.json"
        address_file.unlink(missing_ok=True)
        dask = [sys.executable, "-m", "dask"]
        quiet = dict(cwd=self.folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.processes.append(subprocess.Popen([*dask, "scheduler", "--host", "127.0.0.1", "--port", "0",
                                                "--no-dashboard", "--scheduler-file", str(address_file)], **quiet))
        deadline = time.monotonic() + 60
        while not address_file.exists():
            if time.monotonic() > deadline:
                raise RuntimeError("the Dask scheduler did not start within 60 s")
            time.sleep(0.2)
        self.processes += [subprocess.Popen([*dask, "worker", "--scheduler-file", str(address_file), "--nthreads", "1",
                                             "--memory-limit", "0", "--no-dashboard", "--name", f"worker-{i}"], **quiet)
                           for i in range(self.workers)]
        address = json.loads(address_file.read_text())["address"]
        with Client(address, timeout="60s") as client:
            client.wait_for_workers(self.workers, timeout=120)
        return address

    def __exit__(self, *exc):
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            process.wait(timeout=30)
