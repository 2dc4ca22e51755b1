"""Shared fixtures: the reference answers, taken from the source notebooks themselves."""
from __future__ import annotations

import os
import subprocess
import sys
import time
import types
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]


def source_notebook(assignment: str) -> Path:
    (path,) = (ROOT / "solutions").glob(f"{assignment}_*/*.ipynb")
    return path


def reference_answers(assignment: str) -> types.SimpleNamespace:
    """Run the setup cell's imports and every autograded answer cell of the source notebook.

    The tests then check the checkers against exactly the code students are
    compared with, and against deliberately wrong variants of it.
    """
    nb = nbformat.read(source_notebook(assignment), as_version=4)
    namespace: dict = {}
    setup = next(c for c in nb.cells if c.cell_type == "code")
    exec("\n".join(line for line in setup.source.splitlines() if not line.startswith(("%", "device, budget"))), namespace)
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        if cell.cell_type == "code" and meta.get("solution") and not meta.get("grade"):
            exec(cell.source, namespace)
    return types.SimpleNamespace(**namespace)


def message(check, *args, **kwargs) -> str:
    """The message with which a checker rejects an answer."""
    from helpers.checks import CheckFailed

    with pytest.raises(CheckFailed) as failure:
        check(*args, **kwargs)
    return str(failure.value)


def fails(check, *args, match=None, **kwargs):
    """Assert that a checker rejects an answer (with a message matching ``match``)."""
    from helpers.checks import CheckFailed

    with pytest.raises(CheckFailed, match=match):
        check(*args, **kwargs)


@pytest.fixture(scope="session")
def _judged_agent(tmp_path_factory):
    """One stand-in kernel for the whole session (tests/judged_agent.py), as a separate process."""
    folder = tmp_path_factory.mktemp("judged")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen([sys.executable, str(ROOT / "tests" / "judged_agent.py")], stdin=subprocess.PIPE,
                               text=True, env=env, cwd=folder)
    yield folder, process
    process.stdin.close()
    process.wait(timeout=60)


@pytest.fixture
def judged(_judged_agent):
    """``judged(obj)``: a Remote handle to a copy of ``obj`` in the stand-in kernel, to run a check as grading does."""
    from helpers import bridge

    folder, process = _judged_agent
    connections = []

    def ship(obj):
        if not connections:
            listener = bridge.Listener(str(folder))
            process.stdin.write(listener.path + "\n")
            process.stdin.flush()
            connections.append(listener.accept(time.monotonic() + 600))
        return connections[0].ship(obj)

    yield ship
    for connection in connections:
        connection.close()


@pytest.fixture(params=["local", "judged"])
def student(request):
    """``student(answer)``: the answer as a check receives it, itself (self-check) or a Remote handle (grading)."""
    return request.getfixturevalue("judged") if request.param == "judged" else (lambda answer: answer)


@pytest.fixture(scope="session")
def ref01():
    return reference_answers("01")


@pytest.fixture(scope="session")
def ref02():
    return reference_answers("02")


@pytest.fixture(scope="session")
def ref03():
    return reference_answers("03")


@pytest.fixture(scope="session")
def ref04():
    return reference_answers("04")


@pytest.fixture(scope="session")
def hub_course(tmp_path_factory):
    """The short course through nbgrader's exchange as a JupyterHub runs it, then autograded.

    The instructor releases into a local exchange directory; alice (the reference answers) and bob
    (the untouched release) fetch and submit from their own home folders; the instructor collects.
    Returns the course directory and the exchange's command outputs.
    """
    from classroom import hub_round_trip

    return hub_round_trip(tmp_path_factory.mktemp("hub"))
