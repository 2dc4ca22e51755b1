"""What every checker needs: calling student code safely, comparing, failing clearly.

Checkers run in the same kernel as the submission, so they also guard
themselves: they accept only plain tensors and numbers (an object whose
comparisons always succeed cannot stand in for a result), and before
reporting a pass they verify that the library functions they compute with
were not replaced since the checkers were imported (before any student cell
ran). A check that finds either fails with a message that starts with
``TAMPERING``, which the grader's report lists for a look.
"""
from __future__ import annotations

import builtins
import contextlib
import io
import math
import sys
import warnings

import numpy as np
import numpy.linalg
import numpy.testing
import torch
import torch._dynamo  # noqa: F401 (imported by the first optimiser step anyway; it re-wraps torch.manual_seed)
import torch.nn.functional


class CheckFailed(AssertionError):
    """A check did not pass; the message says what was expected, what came back and why."""


TAMPERING = "TAMPERING"
_WATCHED = (builtins, math, np, numpy.linalg, numpy.testing, torch, torch.linalg, torch.nn.functional, torch.testing,
            torch.Tensor, torch._C.TensorBase, torch.nn.Module, sys.modules[__name__])


def _snapshot() -> dict[tuple[int, str], object]:
    table = {}
    for owner in _WATCHED:
        # For a class, what attribute lookup finds along its MRO, unbound (getattr would make a new bound
        # method each time), so that an attribute added to shadow a base class's counts as a change.
        if isinstance(owner, type):
            items = ((n, next(vars(k)[n] for k in owner.__mro__ if n in vars(k))) for n in dir(owner))
        else:
            items = ((n, getattr(owner, n, None)) for n in dir(owner))
        for name, value in items:
            if name in ("_", "input"):
                continue  # IPython's last result; ipykernel swaps `input` for every cell it runs
            if callable(value) or isinstance(value, (property, staticmethod, classmethod)):
                table[id(owner), name] = value
    return table


_ORIGINAL = _snapshot()
_CLASS_IDS = {id(owner) for owner in _WATCHED if isinstance(owner, type)}
_OWNER_NAMES = {id(owner): getattr(owner, "__name__", repr(owner)) for owner in _WATCHED}


def watch_checkers() -> None:
    """Add the checker modules imported so far to what is verified (the setup cell calls this via helpers.setup)."""
    global _WATCHED, _ORIGINAL
    loaded = [m for name, m in sorted(sys.modules.items()) if name.startswith("helpers.checks.") and m not in _WATCHED]
    if loaded:
        _WATCHED = (*_WATCHED, *loaded)
        _OWNER_NAMES.update({id(m): m.__name__ for m in loaded})
        _ORIGINAL = _snapshot()


def replaced_functions() -> list[str]:
    """Library functions the checkers rely on that differ from when the checkers were imported."""
    now = _snapshot()
    changed = {key for key, value in _ORIGINAL.items() if now.get(key) is not value}
    changed |= {key for key in now.keys() - _ORIGINAL.keys() if key[0] in _CLASS_IDS}  # e.g. a new Tensor.__eq__
    return sorted(f"{_OWNER_NAMES[owner]}.{name}" for owner, name in changed)


def verify_untouched() -> None:
    changed = replaced_functions()
    if changed:
        raise CheckFailed(f"{TAMPERING}: functions the checks rely on were replaced ({', '.join(changed[:5])}"
                          f"{', …' if len(changed) > 5 else ''}). A submission must not change the grading "
                          "machinery; this submission is flagged for the instructor.")


def fail(message: str):
    raise CheckFailed(message)


def expect(condition: bool, message: str) -> None:
    if not condition:
        fail(message)


def passed(message: str) -> None:
    verify_untouched()
    print(f"✔ {message}")


@contextlib.contextmanager
def silenced():
    """Run student code quietly: warnings and progress bars off stderr (nbgrader zeroes a test cell that
    writes there), and its training printout off the check's own report."""
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def call(fn, *args, what: str | None = None, **kwargs):
    """Call the student's ``fn``; turn 'not implemented yet' and crashes into a clear failure."""
    what = what or f"{getattr(fn, '__name__', 'your function')}(...)"
    try:
        with silenced():
            return fn(*args, **kwargs)
    except NotImplementedError:
        fail(f"{what} is not implemented yet: replace `raise NotImplementedError()` with your code.")
    except CheckFailed:
        raise
    except Exception as error:
        raise CheckFailed(f"{what} raised {type(error).__name__}: {error}") from error


def as_tensor(value, what: str) -> torch.Tensor:
    """A tensor from a tensor or NumPy array (checks accept both), detached and on the CPU.

    Subclasses are refused: they can redefine comparisons and arithmetic.
    """
    if type(value) in (torch.Tensor, torch.nn.Parameter):
        return torch.Tensor.cpu(torch.Tensor.detach(value))
    if type(value) is np.ndarray:
        return torch.from_numpy(value)
    if isinstance(value, (torch.Tensor, np.ndarray)):
        fail(f"{TAMPERING}: {what} is a {type(value).__name__}, a subclass of {type(value).__mro__[1].__name__}; "
             "return a plain torch.Tensor.")
    fail(f"{what} should be a torch.Tensor, got {type(value).__name__}.")


def as_float(value, what: str) -> float:
    if type(value) in (float, int, bool, np.float64, np.float32, np.float16, np.int64, np.int32):
        return float(value)
    if type(value) is torch.Tensor and value.numel() == 1:
        return float(torch.Tensor.item(value))
    if type(value) is np.ndarray and value.size == 1:
        return float(value.item())
    fail(f"{what} should be a number (a Python float), got {type(value).__name__}.")


def expect_shape(tensor: torch.Tensor, shape: tuple, what: str) -> None:
    expect(tuple(tensor.shape) == tuple(shape), f"{what} has shape {tuple(tensor.shape)}, expected {tuple(shape)}.")


def max_abs_diff(a, b) -> float:
    a = torch.as_tensor(a, dtype=torch.float64)
    b = torch.as_tensor(b, dtype=torch.float64)
    return float((a - b).abs().max()) if a.numel() else 0.0


def fmt(values, digits: int = 4) -> str:
    """A short, readable rendering of a vector of numbers for failure messages."""
    array = np.asarray(torch.as_tensor(values, dtype=torch.float64)).ravel()
    shown = ", ".join(f"{v:.{digits}g}" for v in array[:6])
    return f"[{shown}{', …' if array.size > 6 else ''}]"


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def non_contiguous(x: torch.Tensor) -> torch.Tensor:
    """The same values as ``x`` in a non-contiguous (column-major) layout, as a transpose or a slice gives them.

    Code that calls ``.view`` on its input, or assumes row-major memory, fails on it.
    """
    if x.dim() < 2:
        return torch.stack([x, x], 1)[:, 0]
    return x.transpose(0, -1).contiguous().transpose(0, -1)


def call_unchanged(fn, *args, what: str, **kwargs):
    """``call`` that also fails when ``fn`` modified one of its tensor arguments in place (``X -= mean``, or
    updating ``centroids = init`` row by row): the notebook reuses its data after the call."""
    given = {**{f"argument number {i + 1}": a for i, a in enumerate(args)}, **{f"argument `{k}`": v for k, v in kwargs.items()}}
    copies = {name: a.clone() for name, a in given.items() if isinstance(a, torch.Tensor)}
    result = call(fn, *args, what=what, **kwargs)
    for name, copy in copies.items():
        if not torch.equal(given[name], copy):
            fail(f"{what} changed its {name} in place (e.g. `X -= X.mean(0)`, or `centroids = init` then "
                 "`centroids[j] = ...`): the caller's data are corrupted. Work on a new tensor (X = X - X.mean(0)) or "
                 "a copy (init.clone()).")
    return result
