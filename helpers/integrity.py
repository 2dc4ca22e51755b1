"""Does a submission's code reach for the grading machinery? A second, independent signal for the instructor.

Verdicts do not depend on this module: the checks run in the trusted grading
process (:mod:`helpers.judge`), so a submission cannot make them pass by
patching its own kernel. What this module adds is a reading of the
submission's own code cells with Python's ``ast`` (after IPython's translation
of magics), before they run: patching modules or classes, reaching
``sys.modules``, builtins, IPython's internals, the kernel's history, frames
and the garbage collector, classes that redefine comparisons or subclass
tensors, dynamic code, shell commands, mentions of the course's private
folders. Honest code does none of this; a submission that does is listed for
a look with the reasons, and its scores are held until the instructor clears it.
"""
from __future__ import annotations

import ast
import re

from .feedback import is_test_cell

# Magics a student may use without a second look.
HARMLESS_MAGICS = {"matplotlib", "time", "timeit", "config", "load_ext", "autoreload", "capture", "env"}
SUSPICIOUS_NAMES = {
    "__builtins__": "reaches the builtins", "builtins": "reaches the builtins", "__import__": "imports dynamically",
    "importlib": "imports dynamically", "get_ipython": "reaches IPython's internals", "IPython": "reaches IPython's internals",
    "ipykernel": "reaches the kernel's internals", "_ih": "reads the kernel's input history",
    "_oh": "reads the kernel's output history", "In": "reads the kernel's input history",
    "Out": "reads the kernel's output history",
    "ctypes": "uses ctypes", "gc": "walks the garbage collector", "inspect": "inspects frames or source",
    "exec": "runs dynamic code", "eval": "runs dynamic code", "compile": "compiles dynamic code",
    "setattr": "sets attributes dynamically", "delattr": "deletes attributes dynamically",
    "globals": "edits the global namespace", "vars": "reads object namespaces",
    "subprocess": "runs shell commands", "socket": "opens network sockets", "pty": "opens terminals",
    "signal": "handles signals",
}
SUSPICIOUS_ATTRIBUTES = {
    "_getframe": "reads interpreter frames", "f_back": "reads interpreter frames",
    "f_globals": "reads interpreter frames", "f_locals": "reads interpreter frames", "settrace": "traces execution",
    "setprofile": "traces execution", "excepthook": "changes how errors are reported",
    "displayhook": "changes how results are shown", "showtraceback": "changes how errors are reported",
    "_showtraceback": "changes how errors are reported", "history_manager": "reads the kernel's history",
    "events": "hooks into cell execution", "ast_transformers": "rewrites cells before they run",
    "input_transformers_post": "rewrites cells before they run", "input_transformers_cleanup": "rewrites cells before they run",
    "__code__": "edits function code", "__globals__": "reaches a function's globals", "__dict__": "edits object namespaces",
    "__subclasses__": "walks class hierarchies", "__torch_function__": "overrides torch dispatch",
    "__array_ufunc__": "overrides NumPy dispatch", "__array_function__": "overrides NumPy dispatch",
    "system": "runs shell commands", "popen": "runs shell commands", "run_cell": "runs cells itself",
}
FAKE_RESULT_METHODS = {"__eq__", "__ne__", "__lt__", "__le__", "__gt__", "__ge__", "__bool__", "__float__", "__int__",
                       "__index__", "__abs__", "__sub__", "__rsub__", "__array__", "__getattr__", "__getattribute__",
                       "__instancecheck__", "__subclasscheck__", "__torch_function__", "__array_ufunc__"}
HARMLESS_SETTINGS = ("torch.backends.", "plt.rcParams", "matplotlib.rcParams", "pd.options.")
RESERVED_NAMES = {"checks", "helpers"}  # what the test cells call through
PRIVATE_PLACES = re.compile(r"(solutions|gradebook|submitted|autograded|feedback|\.grading|nbgrader_config|\.ipynb)")


def _python(source: str) -> str:
    from IPython.core.inputtransformer2 import TransformerManager

    return TransformerManager().transform_cell(source)


def _root_name(node) -> str | None:
    while isinstance(node, (ast.Attribute, ast.Subscript, ast.Call)):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else None


def _magic_name(call: ast.Call) -> str | None:
    """'time' for get_ipython().run_line_magic('time', ...), as IPython translates %time."""
    func = call.func
    if (isinstance(func, ast.Attribute) and func.attr in ("run_line_magic", "run_cell_magic")
            and isinstance(func.value, ast.Call) and _root_name(func.value) == "get_ipython"
            and call.args and isinstance(call.args[0], ast.Constant)):
        return str(call.args[0].value)
    return None


def _cell_reasons(tree: ast.AST, imported: set[str]) -> set[str]:
    reasons: set[str] = set()
    harmless_magic_calls = set()
    called = {id(node.func) for node in ast.walk(tree) if isinstance(node, ast.Call)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and _magic_name(node) is not None:
            name = _magic_name(node)
            if name in HARMLESS_MAGICS:
                harmless_magic_calls.add(id(node.func.value))
            else:
                reasons.add(f"uses the %{name} magic")
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id in SUSPICIOUS_NAMES:
            if not (node.id == "get_ipython" and any(id(c) in harmless_magic_calls for c in _calls_of(tree, node))):
                reasons.add(f"{SUSPICIOUS_NAMES[node.id]} ({node.id})")
        elif isinstance(node, ast.Attribute) and node.attr in SUSPICIOUS_ATTRIBUTES:
            reasons.add(f"{SUSPICIOUS_ATTRIBUTES[node.attr]} (.{node.attr})")
        elif isinstance(node, ast.Attribute) and node.attr == "modules" and id(node) not in called:
            reasons.add("reaches sys.modules (.modules)")  # model.modules() is a call, sys.modules is not
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            modules = [alias.name for alias in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
            for module in modules:
                top = module.split(".")[0]
                if top in SUSPICIOUS_NAMES:
                    reasons.add(f"{SUSPICIOUS_NAMES[top]} (imports {module})")
            for alias in node.names:
                if (alias.asname or alias.name.split(".")[0]) in RESERVED_NAMES:
                    reasons.add(f"rebinds `{alias.asname or alias.name}`, which the test cells use")
        elif isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Delete)):
            targets = node.targets if isinstance(node, (ast.Assign, ast.Delete)) else [node.target]
            for target in _flatten(targets):
                changed = target.value if isinstance(target, ast.Subscript) else target
                if (isinstance(changed, ast.Attribute) and _root_name(changed) in imported
                        and not ast.unparse(changed).startswith(HARMLESS_SETTINGS)):
                    reasons.add(f"changes a library or checker attribute ({ast.unparse(changed)})")
                elif isinstance(target, ast.Name) and target.id in RESERVED_NAMES:
                    reasons.add(f"rebinds `{target.id}`, which the test cells use")
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name in RESERVED_NAMES:
            reasons.add(f"rebinds `{node.name}`, which the test cells use")
        if isinstance(node, ast.ClassDef):
            faked = sorted({m.name for m in node.body if isinstance(m, (ast.FunctionDef, ast.Assign)) and
                            getattr(m, "name", None) in FAKE_RESULT_METHODS})
            if faked:
                reasons.add(f"class {node.name} redefines {', '.join(faked)}, which can fake a check's comparisons")
            for base in node.bases:
                base_name = ast.unparse(base)
                if base_name.split(".")[-1] in ("Tensor", "ndarray", "float", "int", "Parameter"):
                    reasons.add(f"class {node.name} subclasses {base_name}")
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and PRIVATE_PLACES.search(node.value):
            reasons.add(f"mentions {PRIVATE_PLACES.search(node.value).group(1)!r}, a place only the grader uses")
    return reasons


def _flatten(targets):
    for target in targets:
        if isinstance(target, (ast.Tuple, ast.List)):
            yield from _flatten(target.elts)
        elif isinstance(target, ast.Starred):
            yield from _flatten([target.value])
        else:
            yield target


def _calls_of(tree: ast.AST, name: ast.Name):
    """The get_ipython() calls that contain this very Name node."""
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call) and node.func is name]


def _imported_names(trees) -> set[str]:
    names = set()
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names |= {(alias.asname or alias.name).split(".")[0] for alias in node.names}
    return names


def suspicious_code(submission, release) -> list[str]:
    """Why the submission's own code cells look like they tamper with grading (empty: nothing seen).

    ``release`` is the released notebook: cells whose source is unchanged from
    it (the setup cell, the plotting cells) are trusted and not read.
    """
    trusted = {c.source.strip() for c in release.cells if c.cell_type == "code"}
    trees, own = [], []
    for index, cell in enumerate(submission.cells):
        if cell.cell_type != "code" or is_test_cell(cell):
            continue
        try:
            tree = ast.parse(_python(cell.source))
        except SyntaxError:
            continue  # it fails when it runs; nothing to read
        trees.append(tree)
        if cell.source.strip() not in trusted:
            own.append((index, tree))
    imported = _imported_names(trees)
    found = []
    for index, tree in own:
        found += [f"cell {index}: {reason}" for reason in sorted(_cell_reasons(tree, imported))]
    return found

