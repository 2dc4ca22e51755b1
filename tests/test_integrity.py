"""Reading a submission's code for tampering: attacks are named, honest code is not."""
from pathlib import Path

import nbformat
import pytest

from helpers import integrity

ROOT = Path(__file__).resolve().parents[1]


def reasons(source: str) -> list[str]:
    release = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("import torch\nimport numpy as np\nimport sys\nfrom helpers.checks import a01 as checks")])
    submission = nbformat.v4.new_notebook(cells=[*release.cells, nbformat.v4.new_code_cell(source)])
    return integrity.suspicious_code(submission, release)


@pytest.mark.parametrize("source", [
    "torch.allclose = lambda *a, **k: True",
    "np.testing.assert_allclose = print",
    "import builtins\nbuiltins.abs = lambda x: 0",
    "sys.modules['helpers.checks.a01'] = None",
    "checks = None",
    "import helpers.checks.a02 as checks",
    "setattr(checks, 'check_pca', print)",
    "get_ipython().showtraceback = lambda *a: None",
    "get_ipython().events.register('pre_run_cell', print)",
    "print(In[-1])",
    "print(_ih)",
    "class T(torch.Tensor):\n    pass",
    "class Yes:\n    def __eq__(self, other):\n        return True",
    "exec(open('x').read())",
    "__import__('sy' + 's')",
    "open('/course/solutions/01/01.ipynb')",
    "%load ../../solutions/01/01.ipynb",
    "!cat /etc/passwd",
    "import ctypes",
    "import gc\ngc.get_objects()",
    "import inspect\ninspect.currentframe().f_back.f_globals",
])
def test_tampering_code_is_named(source):
    assert reasons(source), source


@pytest.mark.parametrize("source", [
    "def standardize(X):\n    return (X - X.mean(0)) / X.std(0, correction=0)",
    "torch.backends.cudnn.benchmark = True\ntorch.manual_seed(0)",
    "for module in model.modules():\n    print(module)",
    "%time y = torch.ones(3)",
    "%%timeit\nx = 1",
    "class Net(torch.nn.Module):\n    def __init__(self):\n        super().__init__()\n        self.fc = torch.nn.Linear(2, 2)",
    "x = torch.compile",
    "def broken(:\n    pass",  # a syntax error fails when it runs; nothing to read
])
def test_honest_code_is_not_named(source):
    assert reasons(source) == []


def test_reference_answers_and_release_cells_raise_no_flag():
    for source in sorted((ROOT / "solutions").glob("*/*.ipynb")):
        nb = nbformat.read(source, as_version=4)
        release = nbformat.read(ROOT / "notebooks" / source.parent.name / source.name, as_version=4)
        assert integrity.suspicious_code(nb, release) == [], source.name
        assert integrity.suspicious_code(release, release) == []


def test_checkers_refuse_results_that_fake_comparisons(ref01):
    import torch

    from conftest import fails
    from helpers.checks import a01

    class Agreeable(torch.Tensor):
        def __eq__(self, other):
            return True

    fails(a01.check_standardize, lambda X: ref01.standardize(X).as_subclass(Agreeable), match="subclass")
