"""Autograde a class: trusted steps here, untrusted execution in sandboxes, in parallel, on Dask.

For each submission:

1. **Sanitise** (trusted, this process): nbgrader's autograde with only its
   sanitising preprocessors (clear outputs, restore locked and test cells from
   the gradebook) writes ``.grading/sanitized/``; then :func:`rebuild` gives the
   notebook the release's skeleton (each graded cell's type, id and metadata
   from the release; the student's own cells keep their text and lose their
   metadata, so no tag can steer what runs).
2. **Execute and judge**: :func:`helpers.execution.run_job` runs the notebook
   with the kernel in a sandbox, on a Dask cluster (a ``LocalCluster`` of
   ``workers`` processes here, or the cluster at ``scheduler``). The kernel
   runs the student's cells; each test cell's checks run in the worker's
   trusted process (:mod:`helpers.judge`), which asks the kernel for plain
   data only. The job carries the notebook and the limits; the result is the
   executed notebook, each test cell's verdict and typed events.
3. **Record** (trusted, this process): nbgrader's autograde without its
   ``Execute`` preprocessor records the executed notebook, then every test
   cell's score is set from its verdict (a test without a verdict scores 0):
   nothing the kernel printed or displayed counts. Resource limits and crashes
   are reported as such; submissions whose code reaches for the grading
   machinery (:mod:`helpers.integrity`) or whose kernel answered with what no
   honest kernel sends are flagged in the gradebook, with the reasons in
   ``autograded/<student>/<assignment>/grading.json``, and held out of the
   grade export until the instructor clears them. Feedback is written as soon
   as a submission is recorded, while others still run.
"""
from __future__ import annotations

import copy
import json
import os
import re
import secrets
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from . import integrity, regrade
from .execution import Job, Result, run_job
from .gradebook import open_gradebook, read_record, record_path

STAGE = ".grading"  # sanitised and executed notebooks, rewritten on every run; ignored by git
DEFAULT_MEMORY = 4 << 30
DEFAULT_NOTEBOOK_TIMEOUT = 1200


@dataclass
class Options:
    regrade: bool = False
    regrade_changed: bool = False  # grade again what an older version of the tests graded (helpers.regrade)
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

    # It reads the submissions staged by _stage (on the release's skeleton), not submitted/ itself.
    return nbgrader_api(course, CourseDirectory={"submitted_directory": f"{STAGE}/submitted",
                                                 "autograded_directory": f"{STAGE}/sanitized"}, Autograde={
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
    from nbgrader.plugins import CsvExportPlugin

    plugin = CsvExportPlugin(config=_config(course))
    plugin.to = str(target)
    with open_gradebook(course) as gradebook:
        plugin.export(gradebook)


def checks_module(release) -> str:
    """The checker module the release's setup cell imports as ``checks``, e.g. 'helpers.checks.a01'."""
    for cell in release.cells:
        for line in cell.source.splitlines() if cell.cell_type == "code" else ():
            found = re.fullmatch(r"from helpers\.checks import (a\d\d) as checks", line.strip())
            if found:
                return f"helpers.checks.{found.group(1)}"
    return ""


def _grade_id(cell) -> str | None:
    return cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")


def _new_cell(cell_type: str, source: str, metadata: dict, attachments=None, cell_id: str | None = None):
    cell = (nbformat.v4.new_code_cell if cell_type == "code" else nbformat.v4.new_markdown_cell)(source, metadata=metadata)
    if attachments and cell_type == "markdown":
        cell["attachments"] = attachments
    if cell_id:
        cell["id"] = cell_id
    return cell


def rebuild(submission, release):
    """The notebook to run: the release's skeleton with the student's text.

    Each graded or locked cell of the release appears once, with the release's
    type, id and metadata; its source is the student's for an answer cell and
    the sanitiser's (the gradebook's) for the others. A release cell missing
    from the submission is put back after its predecessor. The student's own
    cells keep their text and lose their metadata (tags cannot make nbclient
    skip a cell or the driver treat it as a test); raw cells and cells of other
    types are not run. The submitted notebook itself is never changed.
    """
    reference = {_grade_id(c): c for c in release.cells if _grade_id(c)}
    placed, cells = set(), []
    for cell in submission.cells:
        grade_id = _grade_id(cell)
        if grade_id in reference and grade_id not in placed:
            placed.add(grade_id)
            ref = reference[grade_id]
            cells.append(_new_cell(ref.cell_type, cell.source, copy.deepcopy(ref.metadata), cell.get("attachments"),
                                   ref.get("id")))
        elif cell.cell_type in ("code", "markdown"):
            cells.append(_new_cell(cell.cell_type, cell.source, {}, cell.get("attachments")))
    for position, ref in enumerate(release.cells):
        grade_id = _grade_id(ref)
        if grade_id and grade_id not in placed:
            before = [_grade_id(c) for c in release.cells[:position] if _grade_id(c)]
            where = max((i + 1 for i, c in enumerate(cells) if _grade_id(c) in before), default=0)
            cells.insert(where, _new_cell(ref.cell_type, ref.source, copy.deepcopy(ref.metadata), None, ref.get("id")))
            placed.add(grade_id)
    nb = nbformat.v4.new_notebook(cells=cells, metadata=copy.deepcopy(release.metadata))
    return nb


def _stage(course: Path, student: str, assignment: str) -> None:
    """A copy of the submission for the sanitiser, each notebook rebuilt on the release's skeleton first.

    nbgrader refuses a notebook whose graded cells' metadata were edited (checksums disagree) and would
    score it 0 whole; rebuilt, it is graded on what the student wrote. ``submitted/`` is never changed.
    """
    source, target = course / "submitted" / student / assignment, course / STAGE / "submitted" / student / assignment
    target.mkdir(parents=True, exist_ok=True)
    for path in source.iterdir():
        release = course / "notebooks" / assignment / path.name
        if path.suffix == ".ipynb" and release.is_file():
            nbformat.write(rebuild(nbformat.read(path, as_version=4), nbformat.read(release, as_version=4)),
                           target / path.name)
        elif path.is_file():
            shutil.copy(path, target / path.name)


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
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


@dataclass
class Submission:
    """Everything grading learns about one student's assignment, gathered in one place as it arrives."""

    student: str
    assignment: str
    running: int = 0  # notebooks not back yet
    static: list[str] = field(default_factory=list)  # what the reading of its code found (helpers.integrity)
    events: list[dict] = field(default_factory=list)  # typed events from the driver (helpers.execution.Event)
    verdicts: dict[str, dict] = field(default_factory=dict)  # notebook name -> grade_id -> verdict

    @property
    def who(self) -> str:
        return f"{self.student} / {self.assignment}"

    def flags(self) -> list[str]:
        return self.static + [e["message"] for e in self.events if e["kind"] == "tampering"]

    def limits(self) -> list[str]:
        """Resource limits and crashes: reported, never taken for tampering."""
        notes = [e["message"] for e in self.events if e["kind"] in ("limit", "stopped")]
        notes += [f"{name}: {grade_id} {v['message']}" for name, cells in self.verdicts.items()
                  for grade_id, v in cells.items() if v["kind"] == "timeout"]
        return notes


def _cleared(record: Path) -> set[str]:
    """The flags an instructor cleared with ``./kit review`` (kept in grading.json across regrades)."""
    cleared = read_record(record).get("cleared")
    return {str(c) for c in cleared} if isinstance(cleared, list) else set()


def _apply_verdicts(course: Path, submission: Submission, flagged: bool) -> None:
    """Each test cell's score from its verdict, in the gradebook; flagged submissions are marked there."""
    with open_gradebook(course) as gradebook:
        record = gradebook.find_submission(submission.assignment, submission.student)
        for notebook in record.notebooks:
            verdicts = submission.verdicts.get(f"{notebook.name}.ipynb", {})
            for grade in notebook.grades:
                if grade.cell.cell_type == "code" and grade.auto_score is not None:  # a test cell
                    verdict = verdicts.get(grade.name)
                    grade.auto_score = grade.max_score if verdict and verdict.get("passed") is True else 0
            notebook.flagged = flagged
        gradebook.db.commit()


def grade_submissions(course: Path, pending: list[tuple[str, str]], options: Options, log_dir) -> Outcome:
    """Sanitise, execute and judge, and record each (student, assignment) in ``pending``."""
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
        futures = {}
        for student, assignment in pending:
            submission = Submission(student, assignment)
            _stage(course, student, assignment)
            result = sanitiser.autograde(assignment, student)
            log = log_dir(assignment) / f"{student}.log"
            log.write_text(_strip_ansi(result.get("log", "") + result.get("error", "")))
            if not result["success"]:
                outcome.problems.append(f"{submission.who}: could not be prepared for grading, scored 0 — "
                                        f"see {log.relative_to(course)}")
                continue
            for path in sorted((stage / "sanitized" / student / assignment).glob("*.ipynb")):
                release = nbformat.read(course / "notebooks" / assignment / path.name, as_version=4)
                sanitised = rebuild(nbformat.read(path, as_version=4), release)
                submission.static += integrity.suspicious_code(sanitised, release)
                job = Job(key=f"{student}/{assignment}/{path.name}", notebook=nbformat.writes(sanitised),
                          checks=checks_module(release), cell_timeout=cell_timeout,
                          notebook_timeout=options.notebook_timeout, memory_limit=options.memory_limit,
                          sandbox=options.sandbox)
                futures[executor.submit(job)] = (submission, path.name)
                submission.running += 1
        from distributed import as_completed

        for future in as_completed(list(futures)):
            submission, name = futures[future]
            folder = stage / "executed" / submission.student / submission.assignment
            folder.mkdir(parents=True, exist_ok=True)
            try:
                result: Result = future.result()
            except Exception as error:  # the job itself broke (worker lost, kernel never started): 0, and said so
                outcome.problems.append(f"{submission.who}: {name} could not be run ({type(error).__name__}: "
                                        f"{str(error)[:200]}), scored 0")
            else:
                nbformat.write(nbformat.reads(result.notebook, as_version=4), folder / name)
                submission.events += result.events
                submission.verdicts[name] = result.verdicts
                outcome.timings.append((submission.student, submission.assignment, result.seconds, result.host))
            submission.running -= 1
            if submission.running == 0 and _record(course, recorder, submission, outcome, log_dir):
                write_feedback(course, feedback, submission.student, submission.assignment, outcome, log_dir)
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


def _record(course, recorder, submission: Submission, outcome, log_dir) -> bool:
    """Record the scores of one executed submission from its verdicts; whether they were recorded."""
    student, assignment = submission.student, submission.assignment
    folder = course / STAGE / "executed" / student / assignment
    if not any(folder.glob("*.ipynb")):
        return False
    timestamp = course / "submitted" / student / assignment / "timestamp.txt"
    if timestamp.exists():
        shutil.copy(timestamp, folder / "timestamp.txt")
    cleared = _cleared(record_path(course, student, assignment))  # read before nbgrader rewrites the folder
    result = recorder.autograde(assignment, student)
    log = log_dir(assignment) / f"{student}.log"
    flags, limits = submission.flags(), submission.limits()
    with log.open("a") as handle:
        handle.write(_strip_ansi(result.get("log", "") + result.get("error", "")))
        handle.write("".join(f"\n[grader] {r}" for r in flags + limits))
    if not result["success"]:
        outcome.problems.append(f"{submission.who}: scores could not be recorded, scored 0 — "
                                f"see {log.relative_to(course)}")
        return False
    seen = set(flags) <= cleared  # the instructor cleared exactly these before: not flagged again on a regrade
    _apply_verdicts(course, submission, flagged=bool(flags) and not seen)
    record_path(course, student, assignment).write_text(json.dumps(
        {"flags": flags, "limits": limits, "events": submission.events, "verdicts": submission.verdicts,
         "cleared": sorted(cleared), "version": regrade.version(course, assignment)}, indent=1))
    outcome.problems += [f"{submission.who}: {note}" for note in limits]
    if flags and not seen:
        outcome.flagged[submission.who] = flags + ["scores held out of the grade export until cleared (./kit review)"]
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
