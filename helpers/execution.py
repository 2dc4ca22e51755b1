"""Run one sanitised submission: the untrusted step of grading, and the verdicts of its test cells.

:func:`run_job` takes a job (the sanitised notebook as JSON and the limits)
and returns the executed notebook, each test cell's verdict and what the
trusted driver saw. It needs nothing from the course directory, so it runs the
same in the grading process, in a local worker, or on a Dask worker on another
machine with the course environment and data.

The driver (nbclient) is trusted and runs here; only the kernel runs in the
sandbox (:mod:`helpers.sandbox`). The kernel runs the student's cells and
nothing else: a test cell's code never reaches it. For a test cell the driver
starts :func:`helpers.bridge.serve` in the kernel and :func:`helpers.judge.judge_cell`
here, which runs the checks in this process and asks the kernel only for
plain data; the verdict becomes the cell's output and, separately, the
result's ``verdicts``, from which the scores are recorded. Besides nbclient's
per-cell time limit the driver enforces a wall-clock limit per notebook, a
memory limit on the kernel's whole process tree and a cap on output size.
"""
from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import nbformat
import psutil
from jupyter_client import AsyncKernelManager
from nbclient import NotebookClient
from nbclient.exceptions import DeadKernelError

from . import bridge
from .feedback import is_test_cell
from .limits import DROPPED, MAX_PROCESSES, Limit, LimitHit, memory_hit, processes_hit

LIMIT_ENAME = "GradingLimit"
TIMEOUT_ERROR = {"ename": "CellTimeoutError", "evalue": "", "traceback": ["CellTimeoutError: No reply from kernel before timeout"]}
# What a failed verdict shows as the error's name, by its kind.
VERDICT_ENAMES = {"failed": "CheckFailed", "timeout": "CellTimeoutError", "stopped": LIMIT_ENAME, "protocol": LIMIT_ENAME,
                  "not-run": LIMIT_ENAME}


@dataclass
class Job:
    """Everything one execution needs; plain data, so that it travels to a Dask worker."""

    key: str  # "<student>/<assignment>/<notebook>.ipynb", for logs
    notebook: str  # the sanitised notebook, JSON
    checks: str = ""  # the checker module the test cells call, e.g. "helpers.checks.a01"
    budget: str = "grade"
    cell_timeout: int = 180
    notebook_timeout: int = 1200
    memory_limit: int = 4 << 30
    max_output: int = 20 << 20
    sandbox: bool = True


@dataclass
class Event:
    """Something the driver saw that a grader should know, by kind: "limit" (a resource limit stopped the
    kernel), "stopped" (the kernel died on its own) or "tampering" (what no honest kernel does)."""

    kind: str
    message: str


@dataclass
class Result:
    key: str
    notebook: str  # the executed notebook, JSON, with each test cell's output written from its verdict
    verdicts: dict[str, dict]  # grade_id -> asdict(judge.Verdict): what the scores are recorded from
    events: list[dict]  # asdict(Event)
    seconds: float
    host: str  # the worker's address, or the machine's name


def _error_output(message: str, ename: str = LIMIT_ENAME):
    return nbformat.v4.new_output("error", ename=ename, evalue=message, traceback=[f"{ename}: {message}"])


class GradingClient(NotebookClient):
    """nbclient with the grading rules above; ``events`` and ``verdicts`` collect what it saw and decided."""

    def __init__(self, nb, job: Job, judge_dir: str, **kwargs):
        # shutdown_kernel="immediate": once the last cell has run, nothing the kernel does is wanted; a polite
        # shutdown (torch's and matplotlib's exit handlers) costs 1-2 s per submission. No tag may skip a cell.
        super().__init__(nb, timeout=job.cell_timeout, interrupt_on_timeout=True, allow_errors=True,
                         record_timing=False, error_on_timeout=dict(TIMEOUT_ERROR), shutdown_kernel="immediate",
                         skip_cells_with_tag="\x00", **kwargs)
        self.job, self.judge_dir = job, judge_dir
        self.events: list[Event] = []
        self.verdicts: dict[str, dict] = {}
        self.executed: set[int] = set()
        self.output_capped = False
        self.in_agent = False
        self.on_cell_executed = self._after_cell

    def output(self, outs, msg, display_id, cell_index):

        # The kernel client counted the raw message and, past the cap, sent a stand-in for it (helpers.limits).
        hit = msg.get(DROPPED)
        if hit and not self.output_capped:
            self.output_capped = True
            self.events.append(Event("limit", hit.message))
            outs.append(nbformat.v4.new_output("stream", name="stderr", text=msg["content"]["text"]))
        if hit and msg["msg_type"] != "error":  # a failed cell still shows its error's name
            return None
        return super().output(outs, msg, display_id, cell_index)

    async def async_execute_cell(self, cell, cell_index, execution_count=None, store_history=True):
        if cell.cell_type == "code" and is_test_cell(cell):
            return await self._judge(cell, cell_index)
        return await super().async_execute_cell(cell, cell_index, execution_count, store_history)

    async def _judge(self, cell, cell_index):
        """The test cell's verdict, from the checks run here while the kernel answers through the bridge."""
        from .judge import judge_cell

        listener = bridge.Listener(self.judge_dir)
        deadline = time.monotonic() + self.job.cell_timeout
        verdict = asyncio.get_running_loop().run_in_executor(None, judge_cell, cell.source, listener, self.job.checks,
                                                            deadline)
        agent = nbformat.v4.new_code_cell(bridge.agent_code(listener.path))
        self.in_agent = True
        try:
            await super().async_execute_cell(agent, cell_index, store_history=False)
        finally:
            self.in_agent = False
            self.nb.cells[cell_index] = cell  # nbclient put the agent's cell in the test cell's place
            listener.shutdown()  # a kernel that ended without connecting does not make the judge wait
            self._record_verdict(cell, cell_index, await verdict)
        return cell

    def _record_verdict(self, cell, cell_index, verdict) -> None:
        self.executed.add(cell_index)
        if verdict.kind == "protocol":
            self.events.append(Event("tampering", f"cell {cell_index}: the kernel answered the checks with malformed "
                                                  f"data ({verdict.message})"))
        self.verdicts[cell.metadata.get("nbgrader", {}).get("grade_id", str(cell_index))] = asdict(verdict)
        cell.outputs = verdict_outputs(verdict)

    async def _async_handle_timeout(self, timeout, cell=None):
        if not self.in_agent:  # a test cell's time-out is its verdict's ("timeout")
            self.events.append(Event("limit", f"a cell hit the per-cell time limit ({timeout} s) and was stopped"))
        return await super()._async_handle_timeout(timeout, cell)

    def _after_cell(self, cell, cell_index, execute_reply):
        if self.in_agent or not execute_reply:
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
            self.events.append(Event("tampering", f"cell {cell_index}: an error was raised but its traceback was hidden"))


class _Watchdog:
    """Enforce the job's limits on the kernel (see :mod:`helpers.limits`): stop its whole sandbox when it holds
    more memory (its processes, tmpfs, scratch folder and memory files) or runs more processes than allowed, or
    when the notebook runs too long; cap its output, which its kernel client counts before decoding.

    ``limit`` is the limit that stopped the kernel (kind and message); ``reason`` its message.
    """

    def __init__(self, client: GradingClient, job: Job, max_processes: int | None = None):

        self.client, self.job = client, job
        self.max_processes = max_processes or MAX_PROCESSES
        self.limit = None  # limits.LimitHit, once one stopped the kernel
        self.root: psutil.Process | None = None  # the sandbox's first process, once started
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.next_hook = client.on_notebook_start
        client.on_notebook_start = self._cap_output

    @property
    def reason(self) -> str | None:
        return self.limit.message if self.limit else None

    def _cap_output(self, **kwargs):
        """Once the kernel client is up, before the first cell: the kernel's output counts against the cap."""
        budget = getattr(self.client.kc.iopub_channel, "budget", None)  # None: a kernel manager without the cap
        if budget is not None:
            budget.limit = self.job.max_output
        return self.next_hook(**kwargs) if self.next_hook else None

    def _root(self):
        km = self.client.km
        process = getattr(getattr(km, "provisioner", None), "process", None) if km else None
        if process is not None and process.poll() is None and self.root is None:
            self.root = psutil.Process(process.pid)
        return self.root

    def _watch(self):

        deadline = time.monotonic() + self.job.notebook_timeout
        scratch = getattr(self.client.km, "scratch", None)
        while not self.stop.wait(0.25):
            try:
                root = self._root()
                if root is None:
                    continue
                tree = [root, *root.children(recursive=True)]
            except psutil.Error:
                continue
            self.limit = processes_hit(tree, self.max_processes) or memory_hit(tree, scratch, self.job.memory_limit)
            if self.limit is None and time.monotonic() > deadline:
                self.limit = LimitHit(Limit.TIME, f"time limit: the notebook ran longer than {self.job.notebook_timeout} s")
            if self.limit:
                self.kill_tree()
                return

    def kill_tree(self):
        try:
            root = self._root()
            # The sandbox's init first (the root's child, PID 1 of its namespace): its death ends every process
            # inside at once, where killing one by one would race a fork bomb.
            tree = [*root.children(), *root.children(recursive=True), root] if root and root.is_running() else []
        except psutil.Error:
            return
        for process in tree:
            try:
                process.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(tree, timeout=10)  # gone, not dying, when the worker takes its next job


def verdict_outputs(verdict) -> list:
    """A test cell's outputs, written from its verdict: the ✔ lines, then the reason it failed."""
    outputs = []
    if verdict.lines:
        outputs.append(nbformat.v4.new_output("stream", name="stdout", text="".join(f"{line}\n" for line in verdict.lines)))
    if not verdict.passed:
        outputs.append(_error_output(verdict.message, VERDICT_ENAMES.get(verdict.kind, LIMIT_ENAME)))
    return outputs


def _where() -> str:
    """The Dask worker that ran the job (its address), or this machine's name outside Dask."""
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):
        return os.uname().nodename


def run_job(job: Job) -> Result:
    """Execute ``job`` and return the executed notebook, the test cells' verdicts and what the driver saw."""
    import threadpoolctl
    import torch

    from . import sandbox
    from .budgets import BUDGET_ENV
    from .data import data_dir
    from .judge import Verdict

    started = time.monotonic()
    # The checks run in this process: in the job's budget, on the CPU, one thread (a worker runs one job at a time).
    os.environ[BUDGET_ENV] = job.budget
    os.environ["COURSE_DEVICE"] = "cpu"
    torch.set_num_threads(1)
    threadpoolctl.threadpool_limits(1)  # NumPy's and scikit-learn's BLAS too: two jobs' threads thrash a small CPU
    nb = nbformat.reads(job.notebook, as_version=4)
    scratch = Path(tempfile.mkdtemp(prefix="grading-"))
    # The judge's sockets: a folder the sandbox sees read-only, so the kernel can connect but not plant a socket.
    judge_dir = Path(tempfile.mkdtemp(prefix="grading-judge-"))
    try:
        work = scratch / "work"
        work.mkdir()
        os.chmod(scratch, 0o777)  # the sandbox runs as nobody
        os.chmod(work, 0o777)
        os.chmod(judge_dir, 0o755)
        env = sandbox.kernel_environment(job.budget, data_dir(), work)
        if job.sandbox:
            km = sandbox.SandboxedKernelManager(scratch, [*sandbox.readable_paths(data_dir()), judge_dir],
                                                memory_limit=job.memory_limit, kernel_name="python3")
        else:  # no isolation, but the same cap on output
            km = AsyncKernelManager(kernel_name="python3", client_class="helpers.limits.CappedKernelClient")
        client = GradingClient(nb, job, str(judge_dir), km=km, kernel_name="python3",
                               resources={"metadata": {"path": str(work)}})
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
        if watchdog.reason:
            events.append(Event("limit", watchdog.reason))
            for cell in filter(is_test_cell, nb.cells):  # the check that was running when the limit struck
                verdict = client.verdicts.get(cell.metadata.get("nbgrader", {}).get("grade_id"))
                if verdict and verdict["kind"] == "stopped":
                    verdict["message"] = f"stopped: {watchdog.reason}"
                    cell.outputs = verdict_outputs(Verdict(**verdict))
        if not_run:
            why = watchdog.reason or "the kernel died (the submission crashed it or ran out of memory)"
            if not watchdog.reason:
                events.append(Event("stopped", f"stopped at cell {not_run[0]}: {why}"))
            for i in not_run:
                cell = nb.cells[i]
                if is_test_cell(cell):
                    verdict = Verdict(False, "not-run", f"not run: {why} (at cell {not_run[0]})")
                    client.verdicts[cell.metadata.get("nbgrader", {}).get("grade_id", str(i))] = asdict(verdict)
                    cell.outputs = verdict_outputs(verdict)
                else:
                    cell.outputs.append(_error_output(f"not run: {why}"))
        return Result(job.key, nbformat.writes(nb), client.verdicts, [asdict(e) for e in events],
                      time.monotonic() - started, _where())
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.rmtree(judge_dir, ignore_errors=True)
