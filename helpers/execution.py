"""Run one sanitised submission: the untrusted step of grading.

:func:`run_job` takes a job (the sanitised notebook as JSON and the limits)
and returns the executed notebook plus what the trusted driver saw. It needs
nothing from the course directory, so it runs the same in the grading process,
in a local worker, or on a Dask worker on another machine with the course
environment and data.

The driver (nbclient) is trusted and runs here; only the kernel runs in the
sandbox (:mod:`helpers.sandbox`). The driver sends one cell at a time, so
hidden tests never exist where the submission could read them before their
cell runs, and test cells run without entering the kernel's history. Besides
nbclient's per-cell time limit it enforces a wall-clock limit per notebook, a
memory limit on the kernel's whole process tree and a cap on output size, and
it records what a tampered kernel would hide: an error reported without a
traceback, and the result of canary checks appended after the last cell.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import psutil
from nbclient import NotebookClient
from nbclient.exceptions import DeadKernelError

from .feedback import is_test_cell

CANARY_TAG = "course-canary"
LIMIT_ENAME = "GradingLimit"
TIMEOUT_ERROR = {"ename": "CellTimeoutError", "evalue": "", "traceback": ["CellTimeoutError: No reply from kernel before timeout"]}


@dataclass
class Job:
    """Everything one execution needs; plain data, so that it travels to a Dask worker."""

    key: str  # "<student>/<assignment>/<notebook>.ipynb", for logs
    notebook: str  # the sanitised notebook, JSON
    budget: str = "grade"
    cell_timeout: int = 180
    notebook_timeout: int = 1200
    memory_limit: int = 4 << 30
    max_output: int = 20 << 20
    sandbox: bool = True
    prelude: str = ""  # trusted code run (unrecorded) before every test cell
    canaries: list[str] = field(default_factory=list)


@dataclass
class Result:
    key: str
    notebook: str  # the executed notebook, JSON, canaries removed
    events: list[str]  # what the driver saw that a grader should know
    canaries_failed_as_they_must: list[bool]
    seconds: float
    host: str  # the worker's address, or the machine's name


def _error_output(message: str):
    return nbformat.v4.new_output("error", ename=LIMIT_ENAME, evalue=message, traceback=[f"{LIMIT_ENAME}: {message}"])


class GradingClient(NotebookClient):
    """nbclient with the grading rules above; ``events`` collects what it saw."""

    def __init__(self, nb, job: Job, **kwargs):
        # shutdown_kernel="immediate": once the last cell has run, nothing the kernel does is wanted; a polite
        # shutdown (torch's and matplotlib's exit handlers) costs 1-2 s per submission.
        super().__init__(nb, timeout=job.cell_timeout, interrupt_on_timeout=True, allow_errors=True,
                         record_timing=False, error_on_timeout=dict(TIMEOUT_ERROR), shutdown_kernel="immediate",
                         **kwargs)
        self.job = job
        self.events: list[str] = []
        self.executed: set[int] = set()
        self.output_bytes = 0
        self.output_capped = False
        self.in_prelude = False
        self.on_cell_executed = self._after_cell

    def output(self, outs, msg, display_id, cell_index):
        size = len(json.dumps(msg.get("content", {})))
        if self.output_bytes + size > self.job.max_output:
            if not self.output_capped:
                self.output_capped = True
                self.events.append(f"output over {self.job.max_output >> 20} MiB: the rest was dropped")
                outs.append(nbformat.v4.new_output("stream", name="stderr", text="[output limit reached: the rest of "
                                                   "this notebook's output was dropped by the grader]\n"))
            return None
        self.output_bytes += size
        return super().output(outs, msg, display_id, cell_index)

    async def async_execute_cell(self, cell, cell_index, execution_count=None, store_history=True):
        if cell.cell_type == "code" and is_test_cell(cell):
            if self.job.prelude:
                prelude = nbformat.v4.new_code_cell(self.job.prelude)
                self.in_prelude = True
                try:
                    await super().async_execute_cell(prelude, cell_index, store_history=False)
                finally:
                    self.in_prelude = False
                if any(o.get("output_type") == "error" for o in prelude.outputs):
                    self.events.append(f"cell {cell_index}: the grader's set-up before this test failed")
            store_history = False  # the test's code does not enter In/_ih/the history for later cells to read
        return await super().async_execute_cell(cell, cell_index, execution_count, store_history)

    def _after_cell(self, cell, cell_index, execute_reply):
        if self.in_prelude or not execute_reply:
            return
        self.executed.add(cell_index)
        content = execute_reply.get("content", {})
        if content.get("status") != "error":
            return
        if any(o.get("output_type") == "error" and o.get("ename") == content.get("ename") for o in cell.outputs):
            return
        # The kernel says the cell failed but its traceback is missing: a time-out (the reply is the driver's
        # own), or the kernel's error display was tampered with.
        if content.get("ename") == TIMEOUT_ERROR["ename"]:
            cell.outputs.append(nbformat.v4.new_output("error", **{k: TIMEOUT_ERROR[k] for k in ("ename", "evalue", "traceback")}))
        else:
            cell.outputs.append(_error_output(f"the kernel reported {content.get('ename', 'an error')} in this cell "
                                              "but showed no traceback"))
            self.events.append(f"cell {cell_index}: an error was raised but its traceback was hidden")


class _Watchdog:
    """Kill the kernel's process tree when it outgrows the memory limit or the notebook runs too long."""

    def __init__(self, client: GradingClient, job: Job):
        self.client, self.job = client, job
        self.reason: str | None = None
        self.root: psutil.Process | None = None  # the sandbox's first process, once started
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)

    def _root(self):
        km = self.client.km
        process = getattr(getattr(km, "provisioner", None), "process", None) if km else None
        if process is not None and process.poll() is None and self.root is None:
            self.root = psutil.Process(process.pid)
        return self.root

    def _watch(self):
        deadline = time.monotonic() + self.job.notebook_timeout
        while not self.stop.wait(0.25):
            try:
                root = self._root()
                if root is None:
                    continue
                tree = [root, *root.children(recursive=True)]
                rss = sum(p.memory_info().rss for p in tree if p.is_running())
            except psutil.Error:
                continue
            if rss > self.job.memory_limit:
                self.reason = f"memory limit: the kernel used {rss / 2**30:.1f} GiB (limit {self.job.memory_limit / 2**30:.1f} GiB)"
            elif time.monotonic() > deadline:
                self.reason = f"time limit: the notebook ran longer than {self.job.notebook_timeout} s"
            if self.reason:
                self.kill_tree()
                return

    def kill_tree(self):
        try:
            root = self._root()
            tree = [root, *root.children(recursive=True)] if root and root.is_running() else []
        except psutil.Error:
            return
        for process in reversed(tree):
            try:
                process.kill()
            except psutil.Error:
                pass


def _canary_cells(job: Job):
    return [nbformat.v4.new_code_cell(source, metadata={"tags": [CANARY_TAG], "nbgrader": {
        "grade": True, "solution": False, "locked": True, "grade_id": f"canary-{i}", "points": 0}})
        for i, source in enumerate(job.canaries)]


def _where() -> str:
    """The Dask worker that ran the job (its address), or this machine's name outside Dask."""
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):
        return os.uname().nodename


def run_job(job: Job) -> Result:
    """Execute ``job`` and return the executed notebook and what the driver saw."""
    from . import sandbox
    from .data import data_dir

    started = time.monotonic()
    nb = nbformat.reads(job.notebook, as_version=4)
    nb.cells.extend(_canary_cells(job))
    scratch = Path(tempfile.mkdtemp(prefix="grading-"))
    try:
        work = scratch / "work"
        work.mkdir()
        os.chmod(scratch, 0o777)  # the sandbox runs as nobody
        os.chmod(work, 0o777)
        env = sandbox.kernel_environment(job.budget, data_dir(), work)
        if job.sandbox:
            km = sandbox.SandboxedKernelManager(scratch, sandbox.readable_paths(data_dir()), kernel_name="python3")
        else:
            km = None
        client = GradingClient(nb, job, km=km, kernel_name="python3", resources={"metadata": {"path": str(work)}})
        watchdog = _Watchdog(client, job)
        watchdog.thread.start()
        try:
            # The kernel's own console chatter (connection notes) is not the notebook's output. cleanup_kc:
            # nbclient shuts down only kernels it made itself, and a worker outlives many jobs.
            client.execute(env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cleanup_kc=True)
        except DeadKernelError:
            pass  # the watchdog's reason, or the submission's own crash, is recorded below
        finally:
            watchdog.stop.set()
            watchdog.thread.join()
            watchdog.kill_tree()  # whatever is left of the sandbox (its kernel, anything it started) ends here
        events = client.events
        not_run = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and c.source.strip() and i not in client.executed]
        if not_run:
            why = watchdog.reason or "the kernel died (the submission crashed it or ran out of memory)"
            events.append(f"stopped at cell {not_run[0]}: {why}")
            for i in not_run:
                nb.cells[i].outputs.append(_error_output(f"not run: {why}"))
        canaries = [c for c in nb.cells if CANARY_TAG in c.metadata.get("tags", [])]
        verdicts = [any(o.get("output_type") == "error" and o.get("ename") != LIMIT_ENAME for o in c.get("outputs", []))
                    for c in canaries]
        nb.cells = [c for c in nb.cells if CANARY_TAG not in c.metadata.get("tags", [])]
        return Result(job.key, nbformat.writes(nb), events, verdicts, time.monotonic() - started, _where())
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
