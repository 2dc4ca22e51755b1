"""Submissions that implement nothing and try to be scored anyway, one per class of weakness (issue 19).

One tiny class of assignment 01 is graded once, through ``course.grade`` as
``./kit grade`` does: the sample students, an honest solution that hits the
memory limit in its last cell, and one blank release per attack with a few
lines added, written from the public release and ``helpers/`` source only.
Every attacker must score 0; the honest ones keep every point; no file of
the course changes. The verdicts come from the trusted process, so these
attacks fail by design, not because each was foreseen.
"""
import hashlib
import json
import os
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from helpers import course, grading, sandbox

ROOT = Path(__file__).resolve().parents[1]
ASSIGNMENT = "01_pca_autoencoders"
NOTEBOOK = f"{ASSIGNMENT}.ipynb"
FULL = 19  # 01's autograded points

pytestmark = pytest.mark.skipif(sandbox.unavailable_reason() is not None and not os.environ.get("CI"),
                                reason="no bubblewrap sandbox here")

# A kernel-side stand-in for helpers.bridge.serve that answers every request with the given JSON reply.
FORGED_AGENT = """
import json, socket, struct, sys, types
def serve(path, namespace=None):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    while True:
        head = sock.recv(12)
        if len(head) < 12:
            return
        size, count = struct.unpack('!QI', head)
        header = json.loads(sock.recv(size))
        for _ in range(count):
            (n,) = struct.unpack('!Q', sock.recv(8))
            while n:
                n -= len(sock.recv(min(n, 1 << 20)))
        if header.get('op') == 'done':
            return
        sock.sendall(REPLY)
fake = types.ModuleType('helpers.bridge')
fake.serve = serve
fake.REPLY = REPLY
serve.__globals__['REPLY'] = REPLY
sys.modules['helpers.bridge'] = fake
import helpers
helpers.bridge = fake
"""


def _frame(header: bytes) -> str:
    return repr(__import__("struct").pack("!QI", len(header), 0) + header)


ATTACKS = {
    # 1. checkers re-bound or replaced in the kernel
    "rebind-checks": ("class _Pass:\n    def __getattr__(self, name):\n        return lambda *a, **k: print('✔ passed')\n"
                      "checks = _Pass()"),
    "replace-checker-module": ("import sys, types, helpers.checks\nfake = types.ModuleType('helpers.checks.a01')\n"
                               "fake.__getattr__ = lambda name: (lambda *a, **k: print('✔ passed'))\n"
                               "sys.modules['helpers.checks.a01'] = fake\nhelpers.checks.a01 = fake"),
    # 2. a number as the test cell's first result (nbgrader's partial-credit rule)
    "number-first": ("from IPython import get_ipython\n"
                     "get_ipython().events.register('pre_run_cell', lambda *a: get_ipython().display_pub.publish("
                     "{'text/plain': '2'}))"),
    # 3. IPython state that rewrites every later cell
    "input-transformer": ("get_ipython().input_transformers_post.append(\n"
                          "    lambda lines: ['print(\"✔ passed\")\\n'])"),
    "ast-transformer": ("import ast\nclass Nothing(ast.NodeTransformer):\n"
                        "    def visit_Module(self, node):\n        return ast.parse('print(\"✔ passed\")')\n"
                        "get_ipython().ast_transformers.append(Nothing())"),
    # 5. metadata that steers execution
    "skip-tags": "#tags",
    # 6. the checker's expected values from the call stack, torch function modes
    "stack-walk": ("import sys, torch\ndef standardize(X):\n    frame = sys._getframe(1)\n    while frame:\n"
                   "        for value in frame.f_locals.values():\n"
                   "            if isinstance(value, torch.Tensor) and value.shape == X.shape and value is not X:\n"
                   "                return value\n        frame = frame.f_back\n    return X"),
    "torch-function-mode": ("import torch\nfrom torch.overrides import TorchFunctionMode\nclass Agree(TorchFunctionMode):\n"
                            "    def __torch_function__(self, func, types, args=(), kwargs=None):\n"
                            "        if func in (torch.equal, torch.allclose, torch.Tensor.__lt__, torch.Tensor.__gt__):\n"
                            "            return True\n        return func(*args, **(kwargs or {}))\n"
                            "Agree().__enter__()"),
    "magic-tensor": ("import torch\nclass Agreeable(torch.Tensor):\n    def __eq__(self, other):\n        return True\n"
                     "    def __sub__(self, other):\n        return torch.zeros(()).as_subclass(Agreeable)\n"
                     "def standardize(X):\n    return torch.zeros_like(X).as_subclass(Agreeable)"),
    # the bridge itself: a forged agent answering "ok" to everything, and one sending garbage
    "forged-agent": f"REPLY = {_frame(json.dumps({'status': 'ok', 'value': ['bool', True]}).encode())}\n" + FORGED_AGENT,
    "malformed-agent": f"REPLY = {_frame(b'not json at all')}\n" + FORGED_AGENT,
    # a kernel that dies when the checks call it
    "kill-kernel": "import os\ndef standardize(X):\n    os._exit(3)",
}


def answer_cell(nb, grade_id):
    return next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id)


def tree_hashes(folder) -> dict[str, str]:
    skip = {"gradebook.db", "grades.csv", "autograded", "feedback", "reports", grading.STAGE, ".release-build"}
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(Path(folder).rglob("*"))
            if p.is_file() and not set(p.relative_to(folder).parts) & skip and "__pycache__" not in p.parts}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    copy = course.course_copy(tmp_path_factory.mktemp("class"), [ASSIGNMENT])
    course.add_sample_class(copy)
    blank = nbformat.read(copy / "submitted" / "sample-blank" / ASSIGNMENT / NOTEBOOK, as_version=4)
    solved = nbformat.read(copy / "submitted" / "sample-solution" / ASSIGNMENT / NOTEBOOK, as_version=4)
    submissions = {}
    for student, code in ATTACKS.items():
        nb = nbformat.from_dict(json.loads(nbformat.writes(blank)))
        if code == "#tags":  # every test cell tagged to be skipped and marked as not graded
            for cell in nb.cells:
                meta = cell.metadata.get("nbgrader", {})
                if meta.get("grade") and not meta.get("solution"):
                    cell.metadata["tags"] = ["skip-execution", "raises-exception"]
                    meta["grade"] = False
        else:
            answer_cell(nb, "standardize").source = code
        submissions[student] = nb
    # Fair outcomes: an honest notebook whose last cell outgrows the memory limit keeps every point it earned.
    late = nbformat.from_dict(json.loads(nbformat.writes(solved)))
    late.cells.append(nbformat.v4.new_code_cell("import torch\nhog = torch.ones(600, 1024, 1024)"))
    submissions["honest-late-memory"] = late
    for student, nb in submissions.items():
        folder = copy / "submitted" / student / ASSIGNMENT
        folder.mkdir(parents=True)
        nbformat.write(nb, folder / NOTEBOOK)
    before = tree_hashes(copy)
    csv, outcome = course.grade(copy, timeout=60, options=grading.Options(workers=2, memory_limit=2 << 30))
    grades = pd.read_csv(csv).set_index("student_id")["score"]
    return dict(copy=copy, grades=grades, outcome=outcome, before=before, after=tree_hashes(copy))


def record(graded, student) -> dict:
    return json.loads((graded["copy"] / "autograded" / student / ASSIGNMENT / "grading.json").read_text())


def test_honest_students_keep_every_point(graded):
    grades, outcome = graded["grades"], graded["outcome"]
    assert grades["sample-solution"] == FULL and grades["sample-blank"] == 0
    assert grades["honest-late-memory"] == FULL
    assert not any(k.startswith(("sample-", "honest-")) for k in outcome.flagged), outcome.flagged


@pytest.mark.parametrize("student", sorted(ATTACKS))
def test_no_attack_earns_a_point(graded, student):
    assert graded["grades"][student] == 0, (student, graded["grades"][student], record(graded, student)["verdicts"])


def test_a_limit_is_reported_as_a_limit_never_as_tampering(graded):
    problems = "\n".join(graded["outcome"].problems)
    assert "honest-late-memory" in problems and "memory limit" in problems
    late = record(graded, "honest-late-memory")
    assert late["flags"] == [] and any("memory limit" in note for note in late["limits"])
    killed = record(graded, "kill-kernel")
    kinds = [v["kind"] for v in killed["verdicts"][NOTEBOOK].values()]
    assert killed["flags"] == [] and "stopped" in kinds and "not-run" in kinds, killed["verdicts"]
    assert "kill-kernel" in problems and "kernel died" in problems


def test_malformed_answers_are_flagged_with_the_reason(graded):
    flags = graded["outcome"].flagged.get(f"malformed-agent / {ASSIGNMENT}", [])
    assert any("malformed" in reason for reason in flags), graded["outcome"].flagged


def test_flagged_submissions_are_marked_in_the_gradebook(graded):
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{graded['copy'] / 'gradebook.db'}") as gradebook:
        def flagged(student):
            return [nb.flagged for nb in gradebook.find_submission(ASSIGNMENT, student).notebooks]

        assert flagged("malformed-agent") == [True] and flagged("sample-solution") == [False]


def test_every_test_cell_is_judged_and_shows_its_verdict(graded):
    nb = nbformat.read(graded["copy"] / "autograded" / "skip-tags" / ASSIGNMENT / NOTEBOOK, as_version=4)
    tests = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade") and c.cell_type == "code"
             and not c.metadata["nbgrader"].get("solution")]
    assert len(tests) == 8 and all(any(o.output_type == "error" for o in c.outputs) for c in tests)
    assert all("skip-execution" not in c.metadata.get("tags", []) for c in nb.cells)


def test_no_file_of_the_course_changed(graded):
    assert graded["after"] == graded["before"]
