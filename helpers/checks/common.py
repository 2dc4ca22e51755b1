"""What every checker needs: calling student code, comparing, failing clearly.

The same checker code runs in two places. In the student's JupyterLab it
runs in the student's own kernel: a self-check, whose verdict only the
student sees. At grading time it runs in the trusted grading process
(:mod:`helpers.judge`): the student's functions and classes arrive as
:class:`helpers.bridge.Remote` handles, and :func:`call` runs them in the
sandboxed kernel, which returns plain data by value. The checkers need no
guard against tampering of their own: nothing of the student's runs where
they decide.
"""
from __future__ import annotations


import numpy as np
import torch
import torch.nn.functional

from .. import bridge
from ..bridge import silenced  # noqa: F401 (the checkers' name for it)


class CheckFailed(AssertionError):
    """A check did not pass; the message says what was expected, what came back and why."""


def fail(message: str):
    raise CheckFailed(message)


def expect(condition: bool, message: str) -> None:
    if not condition:
        fail(message)


def passed(message: str) -> None:
    from ..judge import report

    line = f"✔ {message}"
    if not report(line):
        print(line)


def call(fn, *args, what: str | None = None, **kwargs):
    """Call the student's ``fn``; turn 'not implemented yet' and crashes into a clear failure."""
    return _call(fn, args, kwargs, what)[0]


def _call(fn, args, kwargs, what):
    """``fn(*args, **kwargs)`` and the ids of its tensor arguments it changed in place (judged calls only)."""
    what = what or f"{getattr(fn, '__name__', 'your function')}(...)"
    try:
        if bridge.involves_kernel(fn, args, kwargs):  # judged: it runs in the student's kernel, quietly there
            return bridge.run_in_kernel(fn, args, kwargs)
        with silenced():
            return fn(*args, **kwargs), set()
    except NotImplementedError:
        fail(f"{what} is not implemented yet: replace `raise NotImplementedError()` with your code.")
    except CheckFailed:
        raise
    except Exception as error:
        raise CheckFailed(f"{what} raised {type(error).__name__}: {error}") from error


def is_instance(value, cls) -> bool:
    """``isinstance``, also when the object or the class is the student's in a judged check (asked of the kernel)."""
    return bridge.remote_isinstance(value, cls)


def type_name(value) -> str:
    """The name of ``value``'s type for a message: the student's own type's name when it stayed in the kernel."""
    return bridge.type_name(value)


def as_tensor(value, what: str) -> torch.Tensor:
    """A tensor from a tensor or NumPy array (checks accept both), detached and on the CPU.

    Subclasses are refused: they can redefine comparisons and arithmetic.
    """
    if type(value) in (torch.Tensor, torch.nn.Parameter):
        return torch.Tensor.cpu(torch.Tensor.detach(value))
    if type(value) is np.ndarray:
        return torch.from_numpy(value)
    if isinstance(value, (torch.Tensor, np.ndarray)):
        fail(f"{what} is a {type(value).__name__}, a subclass of {type(value).__mro__[1].__name__}; "
             "return a plain torch.Tensor.")
    fail(f"{what} should be a torch.Tensor, got {type_name(value)}.")


def as_float(value, what: str) -> float:
    if type(value) in (float, int, bool, np.float64, np.float32, np.float16, np.int64, np.int32):
        return float(value)
    if type(value) is torch.Tensor and value.numel() == 1:
        return float(torch.Tensor.item(value))
    if type(value) is np.ndarray and value.size == 1:
        return float(value.item())
    fail(f"{what} should be a number (a Python float), got {type_name(value)}.")


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
    result, changed = _call(fn, args, kwargs, what)
    for name, copy in copies.items():
        if id(given[name]) in changed or not torch.equal(given[name], copy):
            fail(f"{what} changed its {name} in place (e.g. `X -= X.mean(0)`, or `centroids = init` then "
                 "`centroids[j] = ...`): the caller's data are corrupted. Work on a new tensor (X = X - X.mean(0)) or "
                 "a copy (init.clone()).")
    return result
